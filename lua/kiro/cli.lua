--- The kiro-rt command line (SPEC section 4). The C host sets up Lua and
-- hands over argv; everything a user sees of the CLI is here.

local cli = {}

local EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 124

local USAGE = [[
Usage:
  kiro-rt agent -m TEXT [--model M] [--no-stream] [--mode auto|daemon|oneshot] [--timeout-ms N]
  kiro-rt agent                  (no -m: the prompt is read from stdin)
  kiro-rt run FILE.lua [ARGS...] (run a Lua script with `kiro` loaded, as a kiro task)
  kiro-rt --version | --help

Commands:
  agent   send one prompt to the backend and print the reply
  run     run a script; `kiro` is require-able and `arg` holds ARGS

Environment:
  KIRO_CLI_PATH    backend executable (default: kiro-cli on PATH)
  KIRO_USE_DAEMON  true/false (1/0, yes/no, on/off); false: oneshot for every call (default true)
  KIRO_MODEL       default model (default: the backend's own)
  KIRO_LOG         log filter: a level (error warn info debug trace) or target=level,... (default warn)

Run 'kiro-rt agent --help' for the agent's options.
]]

local AGENT_USAGE = [[
Usage: kiro-rt agent [-m TEXT] [options]

Sends one prompt to the backend and prints the reply on stdout, chunk by
chunk as it arrives. Without -m the prompt is read from stdin.

Options:
  -m, --message TEXT   the prompt (a user message)
      --model M        the model (default: KIRO_MODEL, else the backend's own)
      --no-stream      print the reply only once it is complete
      --mode MODE      auto (daemon, oneshot on failure; the default),
                       daemon (daemon only) or oneshot (spawn per call)
      --timeout-ms N   give up after N ms (exit status 124)
      --raw            send TEXT as the whole prompt, without the
                       "User: ...\n\nAssistant: " template
  -h, --help           this text

Exit status: 0 success, 1 backend failure, 2 usage error, 124 timeout,
128+N killed by signal N (the backends are stopped first).
]]

local function usage_error(msg, hint)
  io.stderr:write("kiro-rt: ", msg, "\n", hint or "Run 'kiro-rt --help' for usage.\n")
  return EXIT_USAGE
end

-- On SIGINT/SIGTERM: every request ends `cancelled`, every backend is
-- stopped, and the loop is interrupted (an error out of whatever waits).
-- Returns a function that tells which signal arrived, if any.
local function catch_signals(kiro)
  local got
  kiro.on_signal(function(sig)
    got = sig
    error(("interrupted by signal %d"):format(sig), 0)
  end)
  return function() return got end
end

local function parse_agent(args)
  local o = { stream = true }
  local i = 1
  local function value(flag)
    i = i + 1
    if args[i] == nil then return nil, flag .. " needs a value" end
    return args[i]
  end
  while i <= #args do
    local a, err = args[i], nil
    local flag, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    if flag then a = flag; table.insert(args, i + 1, inline) end
    if a == "-m" or a == "--message" then
      o.message, err = value(a)
    elseif a == "--model" then
      o.model, err = value(a)
    elseif a == "--no-stream" then
      o.stream = false
    elseif a == "--raw" then
      o.raw = true
    elseif a == "--mode" then
      o.mode, err = value(a)
      if o.mode and o.mode ~= "auto" and o.mode ~= "daemon" and o.mode ~= "oneshot" then
        err = "--mode must be auto, daemon or oneshot (got '" .. o.mode .. "')"
      end
    elseif a == "--timeout-ms" then
      local v
      v, err = value(a)
      if v then
        o.timeout_ms = tonumber(v)
        if not o.timeout_ms or math.type(o.timeout_ms) ~= "integer" or o.timeout_ms <= 0 then
          err = "--timeout-ms needs a positive whole number of milliseconds (got '" .. v .. "')"
        end
      end
    elseif a == "-h" or a == "--help" then
      o.help = true
    else
      err = "agent: unknown argument '" .. a .. "'"
    end
    if err then return nil, err end
    i = i + 1
  end
  return o
end

local function agent(args)
  local o, err = parse_agent(args)
  if not o then return usage_error(err, "Run 'kiro-rt agent --help' for usage.\n") end
  if o.help then io.stdout:write(AGENT_USAGE); return EXIT_OK end

  local use = os.getenv("KIRO_USE_DAEMON")
  if use and use ~= "" then
    local kiro_ok, perr = require("kiro").parse_bool("KIRO_USE_DAEMON", use)
    if kiro_ok == nil then return usage_error(perr) end
  end

  local text = o.message
  if not text then
    text = io.stdin:read("a") or ""
    if not o.raw then text = text:gsub("\n$", "") end
  end
  if text == "" then return usage_error("agent: empty prompt (give -m TEXT or text on stdin)") end

  local kiro = require "kiro"
  local prompt = o.raw and text or kiro.template.render({ { role = "user", content = text } })
  if not utf8.len(prompt) then return usage_error("agent: the prompt is not valid UTF-8") end

  local signalled = catch_signals(kiro)

  local opts = { model = o.model, mode = o.mode, timeout_ms = o.timeout_ms }
  local last = ""
  local ok, e = pcall(function()
    if o.stream then
      for chunk in kiro.stream(prompt, opts) do
        io.stdout:write(chunk)
        io.stdout:flush()
        last = chunk
      end
    else
      local reply, msg, code = kiro.chat(prompt, opts)
      if not reply then error({ code = code, message = msg }, 0) end
      io.stdout:write(reply)
      last = reply
    end
  end)
  if last ~= "" and last:sub(-1) ~= "\n" then io.stdout:write("\n") end
  io.stdout:flush()
  if signalled() then return 128 + signalled() end
  if ok then return EXIT_OK end
  if type(e) ~= "table" or not e.code then error(e, 0) end
  io.stderr:write(("kiro-rt: %s: %s\n"):format(e.code, (tostring(e.message):gsub("\n", " "))))
  return e.code == "timeout" and EXIT_TIMEOUT or EXIT_FAIL
end

local function run(args)
  local file = args[1]
  if not file or file == "-h" or file == "--help" then
    if not file then return usage_error("run: which script? (kiro-rt run FILE.lua [ARGS...])") end
    io.stdout:write("Usage: kiro-rt run FILE.lua [ARGS...]\n\n",
      "Runs FILE.lua as a kiro task: kiro.chat and kiro.stream suspend only the\n",
      "calling task, kiro.spawn starts more; the command returns once every task\n",
      "has finished. `arg` holds ARGS (arg[0] is FILE.lua). A script may return\n",
      "an exit status.\n")
    return EXIT_OK
  end
  local chunk, err = loadfile(file)
  if not chunk then
    io.stderr:write("kiro-rt: run: ", err, "\n")
    return EXIT_USAGE
  end
  local script_arg = { [0] = file }
  for i = 2, #args do script_arg[i - 1] = args[i] end
  _G.arg = script_arg
  local kiro = require "kiro"
  local signalled = catch_signals(kiro)
  local status
  kiro.spawn(function() status = chunk(table.unpack(script_arg)) end)
  local ok, rerr = pcall(kiro.run)
  if signalled() then return 128 + signalled() end
  if not ok then
    io.stderr:write("kiro-rt: run: ", tostring(rerr), "\n")
    return EXIT_FAIL
  end
  if math.type(status) == "integer" then return status end
  if status == false then return EXIT_FAIL end
  return EXIT_OK
end

function cli.main(args)
  local cmd = args[1]
  local rest = table.move(args, 2, #args, 1, {})
  if cmd == "--version" or cmd == "-V" or cmd == "version" then
    io.stdout:write("kiro-rt ", require("kiro.core").version, "\n")
    return EXIT_OK
  elseif cmd == "--help" or cmd == "-h" or cmd == "help" then
    io.stdout:write(USAGE)
    return EXIT_OK
  elseif cmd == "agent" then
    return agent(rest)
  elseif cmd == "run" then
    return run(rest)
  elseif cmd == nil then
    io.stderr:write(USAGE)
    return EXIT_USAGE
  end
  return usage_error("unknown command '" .. cmd .. "'")
end

return cli
