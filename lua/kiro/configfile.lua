--- The configuration file (SPEC 5.2): `--config FILE`, else $KIRO_CONFIG,
-- else $XDG_CONFIG_HOME/kiro-rt/config.lua when it exists. A Lua file that
-- returns a table: kiro.configure's options (the same keys, checked the
-- same way), the seed's `default_model` and `default_provider` ("kiro"),
-- `server` (kiro-rt serve's settings) and `channels` (kiro-rt bot's: each
-- channel's plugin settings and kiro.bot's, `stream_mode` off, partial or
-- draft, or the seed's true and false, and `draft_update_interval_ms`, 250
-- at least). It runs in an environment of its own (it reads the globals,
-- and sets none), is refused when others can write it
-- (as ssh does), and is checked whole before any of it is used: an error
-- names the file, the line where it can be found, and the key.

local core = require "kiro.core"
local config = require "kiro.config"
local errors = require "kiro.error"

local configfile = {}

local prior = {}   -- options' values before any file set them, by name
local applied = {} -- the options the file in use set
local server_in_use -- its `server` settings

-- The `server` settings as one comparable string.
local function server_settings(t)
  local keys = {}
  for k in pairs(t or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  for i, k in ipairs(keys) do keys[i] = k .. "=" .. tostring(t[k]) end
  return table.concat(keys, ",")
end

-- `server`: kiro-rt serve's settings, by the name of their flag.
local SERVER = {
  idle_ms = "integer", stop_grace_ms = "integer", pool_min = "integer", pool_max = "integer",
  cache = "boolean", metrics_listen = "string", log_file = "string", log_max_bytes = "integer",
  max_request_bytes = "integer", max_buffered_bytes = "integer", max_unread_bytes = "integer",
  unread_timeout_ms = "integer",
}
local STREAM_MODES = { off = true, partial = true, draft = true }
-- A channel's other settings (kiro.bot's and the channel plugins').
local CHANNEL = {
  token = "string", api_root = "string", gateway_url = "string", allowed_users = "ids", allowed_chats = "ids",
  backend = "string", model = "string", template = "string", system = "string", on_busy = "busy", bot = "string",
  poll_timeout_s = "integer",
}
local CHANNEL_KEYS = { "stream_mode", "draft_update_interval_ms" }
for k in pairs(CHANNEL) do CHANNEL_KEYS[#CHANNEL_KEYS + 1] = k end
-- The file's own top-level keys (the others are kiro.configure's options).
local FILE_KEYS = { "default_model", "default_provider", "server", "channels" }

--- The file to read: the one named, else $KIRO_CONFIG, else the user's
--- (XDG) one when it exists; nil when there is none.
---@param named? string
---@return string? path
function configfile.path(named)
  if named then return named end
  local from_env = os.getenv("KIRO_CONFIG")
  if from_env and from_env ~= "" then return from_env end
  local path = configfile.user_path()
  local f = path and io.open(path)
  if not f then return nil end
  f:close()
  return path
end

--- The user's file: $XDG_CONFIG_HOME/kiro-rt/config.lua, else
--- ~/.config/kiro-rt/config.lua (whether or not it exists).
---@return string? path
function configfile.user_path()
  local base = os.getenv("XDG_CONFIG_HOME")
  if not base or base == "" then
    local home = os.getenv("HOME")
    base = home and home .. "/.config"
  end
  return base and base .. "/kiro-rt/config.lua"
end

-- The line of the file where the key path `path` (a.b.c) is set: the
-- first `c =` after the first `b =` after the first `a =`, if any.
local function line_of(text, path)
  local lines = {}
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  local from, found = 1, nil
  for key in path:gmatch("[^.]+") do
    local k = key:gsub("%[%d+%]$", ""):gsub("%p", "%%%0")
    found = nil
    for n = from, #lines do
      local line = lines[n]
      if line:find("%f[%w_]" .. k .. "%s*=") or line:find('%["' .. k .. '"%]%s*=') then
        found = n
        break
      end
    end
    if not found then return nil end
    from = found
  end
  return found
end

--- Reads and checks a configuration file. Returns { path =, options =
--- (kiro.configure's), server =, channels = }, or nil and a message
--- "FILE:LINE: key.path: what is wrong" (LINE where it can be found).
---@param path string
---@param for_use? boolean it is to be used (configfile.apply): options an earlier file set and this one
---  leaves out are set back to what they were before any file set them
---@return table|nil conf
---@return string? message
function configfile.load(path, for_use)
  local trusted, terr = require("kiro.plugins").trusted(path)
  if not trusted then return nil, terr end
  local f, ferr = io.open(path, "rb")
  if not f then return nil, ferr end
  local text = f:read("a")
  f:close()
  local env = setmetatable({}, { __index = _G })
  local chunk, err = load(text, "@" .. path, "t", env)
  if not chunk then return nil, err end
  local ok, t = pcall(chunk)
  if not ok then return nil, tostring(t) end
  if type(t) ~= "table" then
    return nil, ("%s: must return a table of settings (it returned %s)"):format(path, type(t))
  end
  local function fail(key, msg)
    local line = line_of(text, key)
    return nil, ("%s:%s %s: %s"):format(path, line and (line .. ":") or "", key, msg)
  end
  local conf = { path = path, options = {}, server = {}, channels = {} }
  for k, v in pairs(t) do
    if type(k) ~= "string" then
      return fail(tostring(k), "keys are names")
    elseif k == "default_provider" then -- the seed's key: it has one provider
      if v ~= "kiro" then return fail(k, ("the one provider is \"kiro\", got %q"):format(tostring(v))) end
    elseif k == "default_model" then
      if type(v) ~= "string" then return fail(k, ("expected a string, got %s"):format(type(v))) end
      if t.model ~= nil then return fail(k, "give model or default_model, not both") end
      conf.options.model = v
    elseif k == "server" then
      if type(v) ~= "table" then return fail(k, ("expected a table, got %s"):format(type(v))) end
      for sk, sv in pairs(v) do
        local want = SERVER[sk]
        if not want then
          return fail("server." .. tostring(sk), "unknown setting" .. errors.did_you_mean(sk, SERVER))
        end
        local got = want == "integer" and (math.type(sv) == "integer" and sv >= 0) or type(sv) == want
        if not got then
          return fail("server." .. sk, ("expected %s, got %q"):format(want == "integer" and "an integer >= 0"
            or "a " .. want, tostring(sv)))
        end
        conf.server[sk] = sv
      end
    elseif k == "channels" then
      if type(v) ~= "table" then return fail(k, ("expected a table, got %s"):format(type(v))) end
      for name, ch in pairs(v) do
        local at = "channels." .. tostring(name)
        if type(ch) ~= "table" then return fail(at, ("expected a table, got %s"):format(type(ch))) end
        for ck, cv in pairs(ch) do
          if ck == "stream_mode" then
            if cv == true or cv == false then cv = cv and "partial" or "off" end -- the seed's form
            if not STREAM_MODES[cv] then return fail(at .. ".stream_mode", ("expected off, partial or draft, got %q")
              :format(tostring(cv))) end
            ch[ck] = cv
          elseif ck == "draft_update_interval_ms" then
            if math.type(cv) ~= "integer" or cv < 250 then
              return fail(at .. ".draft_update_interval_ms",
                ("expected an integer >= 250, got %q"):format(tostring(cv)))
            end
          elseif CHANNEL[ck] then
            local want = CHANNEL[ck]
            local good = want == "ids" and type(cv) == "table" or want == "integer" and math.type(cv) == "integer"
              and cv > 0 or want == "busy" and (cv == "queue" or cv == "cancel") or type(cv) == want
            if good and want == "ids" then
              for _, id in ipairs(cv) do good = good and (math.type(id) == "integer" or type(id) == "string") end
            end
            if not good then
              return fail(at .. "." .. ck, want == "ids" and "expected a list of ids" or want == "busy"
                and "expected queue or cancel" or ("expected %s, got %s"):format(want, type(cv)))
            end
          else
            return fail(at .. "." .. tostring(ck), "unknown setting" .. errors.did_you_mean(ck, CHANNEL_KEYS))
          end
        end
        -- Its plugin, and its bot plugin's, are there (beside the file first).
        local plugins, dir = require "kiro.plugins", path:match("^(.*)/[^/]*$") or "."
        local _, perr = plugins.find("channels", name, { dir .. "/channels" })
        if perr then return fail(at, perr) end
        if ch.bot ~= nil then
          local _, berr = plugins.find("bots", ch.bot, { dir .. "/bots" })
          if berr then return fail(at .. ".bot", berr) end
        end
        conf.channels[name] = ch
      end
    else
      conf.options[k] = v
    end
  end
  if conf.options.policies and conf.options.policy_path == nil then -- plugins beside the file first
    conf.options.policy_path = { (path:match("^(.*)/[^/]*$") or ".") .. "/policies" }
  end
  if for_use then -- options an earlier file set and this one does not go back to what they were
    for k in pairs(applied) do
      if conf.options[k] == nil then
        local was = prior[k]
        if was == nil then was = false end
        conf.options[k] = was
      end
    end
  end
  local vok, verr, prepared = config.validate(conf.options)
  if not vok then
    local unknown = verr:match("^unknown option '([^']+)'")
    if unknown then -- (a top-level key of the file's own, or an option)
      local names = config.option_names()
      for _, k in ipairs(FILE_KEYS) do names[#names + 1] = k end
      return fail(unknown, "unknown option" .. errors.did_you_mean(unknown, names))
    end
    -- "a.b.c: what" names its key path; "a must be ..." its option
    local key, msg = verr:match("^([%w_]+[%w_.%[%]-]*): (.*)$")
    if not key or key:find("^policies%[") then
      key = verr:match("^([%w_]+)[%s:.]") or "?"
      msg = verr:gsub("^" .. key .. ":? ", "")
    end
    local v = conf.options[key]
    if msg:find("^must be") and v ~= nil and type(v) ~= "table" and type(v) ~= "function" then
      msg = ("%s, got %q"):format(msg, tostring(v))
    end
    return fail(key, msg)
  end
  conf.prepared, conf.files = prepared, prepared.files or {}
  return conf
end

--- Uses a configuration file's options (configfile.load's, with for_use):
--- checked already, its policies loaded once.
---@param conf table
---@return table? server the `server` settings of the file used before, if any
function configfile.apply(conf)
  for k in pairs(conf.options) do
    if not applied[k] and prior[k] == nil then
      prior[k] = config.raw_option(k)
      -- the log's filter before any file: the environment's
      if k == "log" and prior[k] == nil then prior[k] = os.getenv("KIRO_LOG") or "warn" end
    end
  end
  config.configure(conf.options, conf.prepared)
  applied = {}
  for k, v in pairs(conf.options) do
    if v ~= false or prior[k] ~= nil then applied[k] = true end
  end
  local before = server_in_use
  server_in_use = conf.server
  return before
end

--- Reloads, as they went: counts by outcome, and the last error.
configfile.reloads = { ok = 0, error = 0, last_error = nil }

--- Reads the file again and, once all of it checks, uses its options; a
--- file that does not check changes nothing (the error is logged, counted
--- and kept for `kiro-rt status`). Requests under way finish as they began.
---@param path string
---@return table|nil conf
---@return string? message
function configfile.reload(path)
  local h0 = core.hrtime()
  local ok, conf, err = pcall(configfile.load, path, true)
  if not ok then conf, err = nil, ("%s: %s"):format(path, tostring(conf)) end
  local r = configfile.reloads
  if not conf then
    r.error, r.last_error = r.error + 1, err
    core.log("error", "kiro.config", "reload failed, the configuration in force stays: " .. err)
    return nil, err
  end
  local before = configfile.apply(conf)
  if configfile.watching and configfile.watching.path == path then configfile.watching.arm(conf.files) end
  r.last_ms = (core.hrtime() - h0) / 1e6
  if before and server_settings(conf.server) ~= server_settings(before) then
    core.log("warn", "kiro.config", path .. ": `server` settings changed; they take effect when the server "
      .. "starts again (the other options already have)")
  end
  r.ok, r.last_error = r.ok + 1, nil
  core.log("info", "kiro.config", "reloaded " .. path)
  return conf
end

--- Changes within this many ms of each other are one change.
configfile.DEBOUNCE_MS = 200

--- Reloads the file whenever it or a policy plugin it loaded changes (the
--- directories are watched, so an editor's write-and-rename counts; changes
--- close together count once). `files`: the plugins the file in use
--- loaded; `on_reload(conf)` is called after each reload that took.
--- Returns a watch (watch.stop()), or nil and a message.
---@param path string
---@param files? string[]
---@param on_reload? fun(conf: table)
---@return table|nil watch
---@return string? message
function configfile.watch(path, files, on_reload)
  local timer
  local watches = {} -- by file
  local ctx = {}
  local function arm(list)
    local want = {}
    for _, f in ipairs(list or {}) do want[f] = true end
    for f, w in pairs(watches) do
      if f ~= path and not want[f] then
        w:stop()
        watches[f] = nil
      end
    end
    for f in pairs(want) do
      if not watches[f] then
        local w, err = core.watch(f, ctx)
        if w then
          watches[f] = w
        else
          core.log("warn", "kiro.config", "cannot watch " .. f .. " for changes: " .. err)
        end
      end
    end
  end
  function ctx.on_event()
    if timer then timer:stop() end
    timer = core.timer(configfile.DEBOUNCE_MS, function()
      timer = nil
      local conf = configfile.reload(path) -- (which arms the plugins' watches anew)
      if conf and on_reload then on_reload(conf) end
    end)
  end
  local w, err = core.watch(path, ctx)
  if not w then return nil, err end
  watches[path] = w
  arm(files)
  local watch = { path = path, arm = arm }
  configfile.watching = watch -- a reload by SIGHUP or kiro-rt reload re-arms it too
  function watch.stop()
    if timer then timer:stop() end
    for _, x in pairs(watches) do x:stop() end
    watches = {}
    if configfile.watching == watch then configfile.watching = nil end
  end
  return watch
end

--- A copy of v fit to print: values under keys that look secret masked.
---@param v any
---@param key? string
---@return any
function configfile.masked(v, key)
  if type(key) == "string" and (key:upper():find("TOKEN") or key:upper():find("SECRET")
     or key:upper():find("PASS") or key:upper():find("KEY")) and type(v) == "string" then
    return "********"
  end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = configfile.masked(x, k) end
  return out
end

return configfile
