--- console: a chat on this terminal (`kiro-rt bot --console`): each line
-- typed is a message, and the reply streams in as it is made. The
-- conversation keeps its history (/reset forgets it, /model NAME picks a
-- model); Ctrl-C stops the reply under way, or drops the line being
-- typed, never the console; Ctrl-D (the end of input) ends it once the
-- last reply is out. On a terminal a line
-- is edited as it is typed, and the arrow keys recall earlier ones (kept
-- between runs in $XDG_STATE_HOME/kiro-rt/console_history).
--
--   channels = { console = { system = "Be brief." } }   -- kiro.bot's settings

local kiro = require "kiro"

return function()
  local ch = { name = "console", limit = math.huge, typing_ms = 3600000, min_interval_ms = 0,
               always_allowed = true, progress = false }
  local out = io.stdout
  local tty = kiro.core.isatty(0) and kiro.core.isatty(1) -- a prompt only for a person
  local shown = {} -- what each reply message shows, by id
  local next_id = 0
  local editor -- on a terminal: lines edited, with a history
  local at_prompt = false -- waiting for a line to be typed

  local function prompt()
    at_prompt = true
    if editor then
      editor:prompt("> ")
    elseif tty then
      out:write("> ")
      out:flush()
    end
  end

  function ch.typing() return true end

  function ch.send(_, _, text)
    next_id = next_id + 1
    shown[next_id] = text
    out:write(text)
    out:flush()
    return next_id
  end

  -- An edit carries the whole text so far: what is new is printed.
  function ch.edit(_, _, id, text)
    local before = shown[id] or ""
    if text:sub(1, #before) == before then
      out:write(text:sub(#before + 1))
    else
      out:write("\n", text)
    end
    shown[id] = text
    out:flush()
    return true
  end

  --- A reply is out: the next prompt.
  function ch.done()
    shown = {}
    out:write("\n")
    prompt()
  end

  --- Ctrl-C with no reply under way: on a terminal, the line being typed
  --- goes and a fresh prompt comes (true: the console goes on); elsewhere
  --- false (a signal: the console ends).
  function ch.interrupt()
    if not tty then return false end
    if at_prompt then
      out:write("\n")
      out:flush()
      prompt()
    end
    return true
  end

  function ch.run(_, on_message)
    local buf, lines, tail, ended = "", {}, 0, false
    local w = { woken = false }
    ch.w = w
    local reader = {}
    function reader.on_event(_, ev, data)
      at_prompt = false
      if ev == "line" then -- (the line editor's: one whole line)
        tail = tail + 1
        lines[tail] = data
      elseif ev == "data" then
        kiro.log("debug", "kiro.channel", ("console: %d bytes"):format(#data))
        buf = buf .. data
        for line in buf:gmatch("([^\n]*)\n") do
          tail = tail + 1
          lines[tail] = line
        end
        buf = buf:match("[^\n]*$")
      else
        if data then kiro.log("error", "kiro.channel", "console: " .. data) end
        kiro.log("debug", "kiro.channel", "console: the end of input")
        if buf ~= "" then
          tail = tail + 1
          lines[tail] = buf
        end
        ended = true
      end
      require("kiro.tasks").wake(w)
    end
    local r, err
    if tty then
      local paths = require "kiro.paths"
      local p = paths.paths()
      r, err = kiro.core.line_editor(reader, paths.ensure_logdir(p) and p.history or nil)
      if not r then kiro.log("info", "kiro.channel", "console: no line editing: " .. err) end
      editor = r
    end
    if not r then r, err = kiro.core.stdin(reader) end
    if not r then error("console: " .. err, 0) end
    ch.reader = r
    prompt()
    local i = 1
    while not ch.stopping do
      if lines[i] then
        local line = lines[i]
        lines[i] = nil
        i = i + 1
        if line:find("%S") then on_message { chat = "console", user = "console", text = line } else prompt() end
      elseif ended then
        break
      else
        require("kiro.tasks").block(w)
      end
    end
    r:stop()
    ch.ended = true
  end

  function ch.stop()
    ch.stopping = true
    if ch.reader then ch.reader:stop() end
    if ch.w then require("kiro.tasks").wake(ch.w) end
  end

  return ch
end
