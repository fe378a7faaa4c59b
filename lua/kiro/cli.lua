--- The kiro-rt command line (SPEC section 4). The C host sets up Lua and
-- hands over argv; everything a user sees of the CLI is here.

local errors = require "kiro.error"

local cli = {}

local EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 124

local USAGE = [[
Usage:
  kiro-rt agent -m TEXT [--model M] [--no-stream] [--mode auto|daemon|oneshot] [--timeout-ms N]
                 [--protocol auto|jsonl|acp] [--session KEY] [--trust-tools KINDS | --trust-all-tools]
                 [--backend NAME] [--template NAME [--var K=V]...] [--raw] [--no-server] [--config FILE]
  kiro-rt agent                  (no -m: the prompt is read from stdin; on a terminal, a conversation)
  kiro-rt run [--config FILE] [--watch] FILE.lua [ARGS...] (a Lua script with `kiro` loaded, as a kiro task)
  kiro-rt serve | status | stop [--config FILE]  (the background server that keeps backends warm)
  kiro-rt reload [--config FILE] (the server reads its configuration file again)
  kiro-rt config check [FILE]    (check a configuration file; print what it sets)
  kiro-rt bot [--config FILE] [--watch]  (chat bots on the configured channels: Telegram, Discord)
  kiro-rt bot --console | status (the same bot on this terminal; what the running one is doing)
  kiro-rt --version | --help

Commands:
  agent   send one prompt to the backend and print the reply
  run     run a script; `kiro` is require-able and `arg` holds ARGS
  serve   run the server in the foreground (agent starts one when none runs)
  status  show the server, its pools and daemons (--json for a machine)
  stop    stop the server gracefully
  bot     answer chats on the channels the configuration file names

Environment:
  KIRO_CLI_PATH    backend executable (default: kiro-cli on PATH)
  KIRO_USE_DAEMON  true/false (1/0, yes/no, on/off); false: oneshot for every call (default true)
  KIRO_PROTOCOL    auto, jsonl or acp: how to speak to a warm backend (default auto)
  KIRO_MODEL       default model (default: the backend's own)
  KIRO_LOG         log filter: a level (error warn info debug trace) or target=level,... (default warn)
  KIRO_CONFIG      configuration file for run, serve, bot, agent --no-server
                   (default: $XDG_CONFIG_HOME/kiro-rt/config.lua)

Run 'kiro-rt COMMAND --help' (agent, run, serve, bot, ...) for a command's options.
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
      --session KEY    a conversation: the server keeps it (on an ACP agent)
                       between calls, and each call sends only its new text
      --protocol P     how to speak to a warm backend: jsonl (the `daemon`
                       subcommand), acp (the Agent Client Protocol: `acp`)
                       or auto: ACP for the agents it knows by name, else
                       `daemon` and, where the CLI has no such subcommand,
                       `acp` (default: KIRO_PROTOCOL, else auto)
      --trust-tools KINDS  let an ACP agent make these kinds of tool calls
                       when it asks permission (comma-separated: read,
                       edit, delete, move, search, execute, think, fetch,
                       switch_mode, other); others are rejected, as they
                       all are by default
      --trust-all-tools  allow every tool call an ACP agent asks for
      --raw            send TEXT as the whole prompt, without the
                       "User: ...\n\nAssistant: " template (an ACP agent
                       always gets the text as it is)
      --template NAME  put TEXT in a template the configuration names (the
                       server's, or with --no-server this process's)
      --var K=V        a {{K}} variable of that template (repeatable)
      --no-server      serve the request in this process (no background server)
      --backend NAME   a backend the configuration names (the server's, or
                       with --no-server this process's)
      --config FILE    with --no-server: the configuration file (default:
                       $KIRO_CONFIG, else $XDG_CONFIG_HOME/kiro-rt/config.lua)
  -h, --help           this text

The request goes through the user's kiro-rt server, which keeps backends
warm between calls; one is started in the background when none runs (see
'kiro-rt serve --help'). With --mode oneshot or KIRO_USE_DAEMON=false no
server is needed: the CLI is spawned for this call.

Exit status: 0 success, 1 backend failure, 2 usage error (a backend or
template name that is not configured too), 124 timeout,
128+N killed by signal N (in-process backends are stopped first).
]]

local SERVE_USAGE = [[
Usage: kiro-rt serve [--config FILE] [--idle-ms N] [--stop-grace-ms N] [--pool-min N] [--pool-max N]
                     [--cache] [--metrics-listen [HOST:]PORT] [--log-file PATH]
                     [--log-max-bytes N] [--max-request-bytes N] [--max-buffered-bytes N]
                     [--max-unread-bytes N] [--unread-timeout-ms N]

Runs the kiro-rt server in the foreground (for systemd and debugging).
`kiro-rt agent` starts one in the background when none runs. It listens on
$XDG_RUNTIME_DIR/kiro-rt/server.sock (else /tmp/kiro-rt-$UID/server.sock), a
socket only this user can reach, keeps a pool of warm daemons per backend, and
exits after N ms without requests.

Options:
  --idle-ms N        exit after N ms without requests (default: KIRO_SERVER_IDLE_MS,
                     else 600000; 0: never)
  --stop-grace-ms N  on stop, in-flight requests get N ms to finish (default 10000)
  --pool-min N       daemons kept warm per backend (default 1)
  --pool-max N       most daemons per backend (default 4)
  --cache            cache replies (and share identical requests in flight)
  --metrics-listen [HOST:]PORT
                     Prometheus metrics at http://HOST:PORT/metrics
                     (HOST defaults to 127.0.0.1: loopback; a name like
                     localhost is resolved)
  --log-file PATH    log (and stderr) to PATH instead of stderr; reopened on
                     SIGHUP (for logrotate), rotated to PATH.1 past
  --log-max-bytes N  bytes (default 10 MiB; 0: never)

Limits (a client past one gets an `overloaded` error naming it):
  --max-request-bytes N   the largest prompt a request may carry (64 MiB)
  --max-buffered-bytes N  bytes of requests held for all clients at once,
                          unfinished request lines included (128 MiB)
  --max-unread-bytes N    replies a client may leave unread before it is
                          disconnected and its requests cancelled (16 MiB)
  --unread-timeout-ms N   a client more than 4 MiB behind has its requests
                          wait (their backends paused) while it reads; one
                          that reads nothing for N ms is disconnected (10000)
  The server takes at most 512 connections; a metrics connection must send
  its request within 5 s (8 KiB of headers), and at most 16 are served at once.
  -h, --help         this text

`kiro-rt status` shows it; `kiro-rt stop` stops it.
]]

-- The longest duration a flag takes (2^31 - 1 ms, 24.8 days), as kiro.configure.
local MAX_MS = 2147483647 -- kiro.env.MAX_MS, without loading kiro.env for every command

--- A whole number in decimal (digits only: no sign, hex, blanks or
-- exponent) from lo to hi; nil, message otherwise.
local function parse_int(what, v, lo, hi)
  local n = type(v) == "string" and v:match("^%d+$") and #v <= 19 and math.tointeger(tonumber(v))
  if not n or n < lo or n > hi then
    return nil, ("%s needs a whole number from %d to %d (got '%s')"):format(what, lo, hi, tostring(v))
  end
  return n
end
cli.parse_int = parse_int

local function usage_error(msg, hint)
  io.stderr:write("kiro-rt: ", msg, "\n", hint or "Run 'kiro-rt --help' for usage.\n")
  return EXIT_USAGE
end

-- On SIGINT/SIGTERM: every request ends `cancelled`, every backend is
-- stopped, and the loop is interrupted (an error out of whatever waits).
-- Returns a function that tells which signal arrived, if any.
local function catch_signals()
  local got
  require("kiro.core").handle_signals(function(sig)
    got = sig
    error(("interrupted by signal %d"):format(sig), 0)
  end)
  return function() return got end
end

-- The backend path as the server must see it: absolute (the server's working
-- directory is not ours).
local function absolute_cli(env, core)
  local path = env.cli()
  if not path then return nil end
  if not path:find("/") then path = core.which(path) or path end
  if path:sub(1, 1) ~= "/" then path = core.cwd() .. "/" .. path end
  return path
end

-- The configuration file (the one named, else $KIRO_CONFIG, else the
-- user's), checked whole and applied; nil when there is none. nil and a
-- message ("config: FILE:LINE: key: ...") when it is unusable.
local function use_config(named)
  local configfile = require "kiro.configfile"
  local path = configfile.path(named)
  if not path then return nil end
  local conf, err = configfile.load(path, true)
  if not conf then return nil, "config: " .. err end
  configfile.apply(conf)
  return conf
end

-- `--config FILE` or `--config=FILE` at args[i]: the file and the next index.
local function config_flag(args, i)
  local a = args[i]
  if a == "--config" then
    if not args[i + 1] or args[i + 1] == "" then return nil, nil, "--config needs a file" end
    return args[i + 1], i + 2
  end
  local inline = a and a:match("^%-%-config=(.*)$")
  if inline then
    if inline == "" then return nil, nil, "--config needs a file" end
    return inline, i + 1
  end
  return nil, i
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
    elseif a == "--session" then
      o.session, err = value(a)
      if o.session and (#o.session == 0 or #o.session > 256) then
        err = "--session needs a key of 1 to 256 bytes"
      end
    elseif a == "--trust-tools" then
      local v
      v, err = value(a)
      if v then o.trust, err = require("kiro.trust").parse_kinds(v) end
    elseif a == "--trust-all-tools" then
      o.trust = "all"
    elseif a == "--raw" then
      o.raw = true
    elseif a == "--template" then
      o.template, err = value(a)
    elseif a == "--var" then
      local v
      v, err = value(a)
      local k, val = (v or ""):match("^([%w_]+)=(.*)$")
      if v and not k then err = "--var needs NAME=VALUE (got '" .. v .. "')" end
      if k then
        o.vars = o.vars or {}
        o.vars[k] = val
      end
    elseif a == "--no-server" then
      o.no_server = true
    elseif a == "--backend" then
      o.backend, err = value(a)
    elseif a == "--config" then
      o.config, err = value(a)
    elseif a == "--mode" then
      o.mode, err = value(a)
      if o.mode and o.mode ~= "auto" and o.mode ~= "daemon" and o.mode ~= "oneshot" then
        err = "--mode must be auto, daemon or oneshot (got '" .. o.mode .. "')"
      end
    elseif a == "--protocol" then
      o.protocol, err = value(a)
      if o.protocol and not require("kiro.env").PROTOCOLS[o.protocol] then
        err = "--protocol must be auto, jsonl or acp (got '" .. o.protocol .. "')"
      end
    elseif a == "--timeout-ms" then
      local v
      v, err = value(a)
      if v then o.timeout_ms, err = parse_int(a, v, 1, MAX_MS) end
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

local EMPTY = "agent: empty prompt (give -m TEXT or text on stdin)"

local bot_cmd -- (below)

local function agent(args)
  local o, err = parse_agent(args)
  if not o then return usage_error(err, "Run 'kiro-rt agent --help' for usage.\n") end
  if o.help then io.stdout:write(AGENT_USAGE); return EXIT_OK end

  -- A plain -m prompt for a running server of this version never gets
  -- here: kiro-rt serves it in C before Lua starts (src/bin/agent.c). What
  -- comes here is everything else: stdin, no server yet, a server of another
  -- version, in-process calls, and every usage error.
  local env, core = require "kiro.env", require "kiro.core"
  local mode_default, mode_err = env.mode()
  if not mode_default then return usage_error(mode_err) end
  local protocol, protocol_err = env.protocol()
  if not protocol then return usage_error(protocol_err) end
  protocol = o.protocol or protocol
  if o.message == "" then return usage_error(EMPTY) end
  -- On a terminal with no -m: a conversation, line by line (the console bot).
  if not o.message and core.isatty(0) and core.isatty(1) then
    return bot_cmd(o.config and { "--config", o.config } or {},
      { backend = o.backend, model = o.model, template = o.template })
  end
  if o.message and not utf8.len(o.message) then return usage_error("agent: the prompt is not valid UTF-8") end
  -- The text is the user's turn: the seed's template goes around it where
  -- the backend takes a prompt text (JSON Lines, oneshot), and an ACP agent
  -- takes it as it is; the core decides once it knows the protocol.
  local template = o.template or (not o.raw and "default" or nil)
  if o.vars and not o.template then return usage_error("agent: --var fills a --template's variables") end
  local cli_path = absolute_cli(env, core)

  -- Signals: every request ends `cancelled`, every backend is stopped.
  local signalled = catch_signals()
  local mode = o.mode or mode_default
  local last = ""
  local function out(chunk)
    io.stdout:write(chunk)
    if o.stream then io.stdout:flush() end
    last = chunk
  end

  -- Through the server (started in the background if need be), unless told
  -- otherwise or oneshot anyway; in-process if the server cannot be had.
  local conn, opts
  if o.session and mode == "oneshot" then
    return usage_error("agent: --session needs a long-lived agent; oneshot has none (--mode, KIRO_USE_DAEMON)")
  end
  if o.config and not o.no_server and mode ~= "oneshot" then
    return usage_error("agent: --config is for an agent served in this process (--no-server); "
      .. "the server reads its own (kiro-rt serve --config FILE)")
  end
  -- With no KIRO_CLI_PATH and no --backend, the agent has no backend of its
  -- own: the server's default serves it (in-process, kiro-cli on PATH).
  local own = os.getenv("KIRO_CLI_PATH") ~= nil and os.getenv("KIRO_CLI_PATH") ~= ""
  if not o.no_server and mode ~= "oneshot" then
    local client = require "kiro.client"
    opts = {
      stream = o.stream, cli = cli_path, model = o.model or env.model(), mode = mode, protocol = o.protocol,
      env = client.backend_env(), timeout_ms = o.timeout_ms, session = o.session, template = template,
      vars = o.vars, trust = o.trust,
    }
    if o.backend or not own then -- the server's: its settings count, under our flags
      opts.backend_name, opts.cli, opts.env, opts.model = o.backend, nil, nil, o.model
    else
      opts.protocol = protocol
    end
    -- A server is started for a backend we know; with none of our own, only
    -- a running server's default can serve (else the error comes at once).
    local cerr, kind
    local known = own or o.backend or cli_path
    conn, cerr, kind = client.open { autostart = known and true or false }
    if not conn and (known or kind ~= "none") then
      core.log("warn", "kiro.client", "cannot use the kiro-rt server (" .. cerr .. "); serving in-process")
    end
  end
  if not conn then -- in-process: the configuration file counts
    local conf, cerr = use_config(o.config)
    if cerr then return usage_error(cerr, "") end -- (the file is wrong, not the command line)
    if o.backend and not require("kiro.config").named_backend(o.backend) then
      return usage_error(("agent: no backend is named %q %s"):format(o.backend,
        conf and "in " .. conf.path or "(no configuration file: --config FILE, $KIRO_CONFIG, or the user's)"))
    end
    local tok, terr = require("kiro.call").check_template(o.template, nil, o.vars)
    if not tok then return usage_error("agent: " .. terr) end
  end
  local prompt = o.message
  if not prompt and not conn then -- in-process: the prompt as a Lua string
    local text = io.stdin:read("a") or ""
    if not o.raw then text = text:gsub("\n$", "") end
    if text == "" then return usage_error(EMPTY) end
    prompt = text
    if not utf8.len(prompt) then return usage_error("agent: the prompt is not valid UTF-8") end
  end

  local usage
  local ok, e = pcall(function()
    if conn then
      local iter, ierr, kind
      if o.message then
        iter = conn:request(o.message, opts)
      else -- stdin straight into the request line
        iter, ierr, kind = conn:request_stdin(not o.raw, opts)
        if not iter then
          if kind == "empty" or kind == "utf8" then usage = "agent: " .. ierr; return end
          local codes = { size = "overloaded", closed = "closed" }
          errors.raise(codes[kind] or "backend", ierr)
        end
      end
      for chunk in iter do out(chunk) end
    elseif o.stream then
      local kiro = require "kiro"
      for chunk in kiro.stream(prompt, { model = o.model, mode = o.mode, protocol = o.protocol or protocol,
                                         timeout_ms = o.timeout_ms, session = o.session, template = template,
                                         vars = o.vars, trust = o.trust, backend = o.backend }) do
        out(chunk)
      end
    else
      local reply, msg, code = require("kiro").chat(prompt,
        { model = o.model, mode = o.mode, protocol = o.protocol or protocol, timeout_ms = o.timeout_ms,
          session = o.session, template = template, vars = o.vars, trust = o.trust, backend = o.backend })
      if not reply then errors.raise(code, msg) end
      out(reply)
    end
  end)
  if conn then conn:close() end
  if usage then return usage_error(usage) end
  if last ~= "" and last:sub(-1) ~= "\n" then io.stdout:write("\n") end
  io.stdout:flush()
  if signalled() then return 128 + signalled() end
  if ok then return EXIT_OK end
  if not errors.is(e) then error(e, 0) end
  io.stderr:write(("kiro-rt: %s: %s\n"):format(e.code, (tostring(e.message):gsub("\n", " "))))
  return e.code == "timeout" and EXIT_TIMEOUT or e.code == "config" and EXIT_USAGE or EXIT_FAIL
end

local function run(args)
  local file = args[1]
  if not file or file == "-h" or file == "--help" then
    if not file then return usage_error("run: which script? (kiro-rt run FILE.lua [ARGS...])") end
    io.stdout:write("Usage: kiro-rt run [--config FILE] [--watch] FILE.lua [ARGS...]\n\n",
      "Runs FILE.lua as a kiro task: kiro.chat and kiro.stream suspend only the\n",
      "calling task, kiro.spawn starts more; the command returns once every task\n",
      "has finished. `arg` holds ARGS (arg[0] is FILE.lua). A script may return\n",
      "an exit status.\n\n",
      "SIGHUP reads the configuration file again; with --watch, so does a change\n",
      "to it or to a policy plugin it loaded.\n")
    return EXIT_OK
  end
  local named, watch, at = nil, false, 1
  while args[at] and args[at]:sub(1, 2) == "--" do
    if args[at] == "--watch" then
      watch, at = true, at + 1
    else
      local f, next_i, cferr = config_flag(args, at)
      if cferr then return usage_error("run: " .. cferr) end
      if not f then return usage_error("run: unknown flag '" .. args[at] .. "'") end
      named, at = f, next_i
    end
  end
  if at > 1 then
    args = table.move(args, at, #args, 1, {})
    file = args[1]
    if not file then
      return usage_error("run: which script? (kiro-rt run [--config FILE] [--watch] FILE.lua [ARGS...])")
    end
  end
  local chunk, err = loadfile(file)
  if not chunk then
    io.stderr:write("kiro-rt: run: ", err, "\n")
    return EXIT_USAGE
  end
  local conf, uerr = use_config(named)
  if uerr then return usage_error(uerr, "") end
  if watch and not conf then
    return usage_error("run: --watch needs a configuration file (--config FILE, $KIRO_CONFIG, ...)")
  end
  -- SIGHUP never ends a script: it reads the configuration file again.
  require("kiro.core").handle_hup(function()
    if conf then require("kiro.configfile").reload(conf.path) end
  end)
  local script_arg = { [0] = file }
  for i = 2, #args do script_arg[i - 1] = args[i] end
  _G.arg = script_arg
  local kiro = require "kiro"
  local signalled = catch_signals()
  local status, script_err
  kiro.spawn(function()
    local ok, res = xpcall(chunk, debug.traceback, table.unpack(script_arg))
    if ok then status = res else script_err = res end
  end)
  -- The script's own error is reported here; another task's goes to the
  -- log (or on_task_error), and fails the run too.
  local watching
  if watch and conf then
    local werr
    watching, werr = require("kiro.configfile").watch(conf.path, conf.files)
    if not watching then io.stderr:write("kiro-rt: run: cannot watch ", conf.path, ": ", werr, "\n") end
  end
  local ok, rerr = pcall(kiro.run)
  if watching then watching.stop() end
  if signalled() then return 128 + signalled() end
  if not ok or script_err then
    io.stderr:write("kiro-rt: run: ", tostring(ok and script_err or rerr), "\n")
    return EXIT_FAIL
  end
  if rerr > 0 then return EXIT_FAIL end
  if math.type(status) == "integer" then return status end
  if status == false then return EXIT_FAIL end
  return EXIT_OK
end

local function ranged(lo, hi)
  return function(flag, v) return parse_int(flag, v, lo, hi) end
end

-- serve's flags: option name and how to read its value (none: a switch).
local SERVE_FLAGS = {
  ["--idle-ms"] = { "idle_ms", ranged(0, MAX_MS) },
  ["--stop-grace-ms"] = { "stop_grace_ms", ranged(0, MAX_MS) },
  ["--pool-min"] = { "pool_min", ranged(0, 1024) },
  ["--pool-max"] = { "pool_max", ranged(1, 1024) },
  ["--max-request-bytes"] = { "max_request_bytes", ranged(1024, 1 << 40) },
  ["--max-buffered-bytes"] = { "max_buffered_bytes", ranged(1024, 1 << 40) },
  ["--max-unread-bytes"] = { "max_unread_bytes", ranged(1024, 1 << 40) },
  ["--unread-timeout-ms"] = { "unread_timeout_ms", ranged(1, MAX_MS) },
  ["--log-file"] = { "log_file", function(flag, v)
    if not v or v == "" then return nil, flag .. " needs a path" end
    return v
  end },
  ["--log-max-bytes"] = { "log_max_bytes", ranged(0, 1 << 40) },
  ["--metrics-listen"] = { "metrics_listen", function(flag, v)
    local host, err = require("kiro.server").parse_listen(v or "")
    if not host then return nil, flag .. ": " .. (v and err or "needs PORT or HOST:PORT") end
    return v
  end },
  ["--cache"] = { "cache" },
}

local function serve(args)
  local opts = {}
  local env_idle = os.getenv("KIRO_SERVER_IDLE_MS")
  if env_idle and env_idle ~= "" then
    local n, err = parse_int("KIRO_SERVER_IDLE_MS", env_idle, 0, MAX_MS)
    if not n then return usage_error(err) end
    opts.idle_ms = n
  end
  local i, named = 1, nil
  while i <= #args do
    local a = args[i]
    if a == "-h" or a == "--help" then io.stdout:write(SERVE_USAGE); return EXIT_OK end
    local cfile, next_i, cferr = config_flag(args, i)
    if cferr then return usage_error("serve: " .. cferr) end
    if cfile then
      named, i = cfile, next_i
      goto continue
    end
    local flag = SERVE_FLAGS[a]
    if not flag then return usage_error("serve: unknown argument '" .. a .. "'") end
    if flag[2] then
      local v, err = flag[2](a, args[i + 1])
      if v == nil then return usage_error(err) end
      opts[flag[1]] = v
      i = i + 2
    else
      opts[flag[1]] = true
      i = i + 1
    end
    ::continue::
  end
  -- The configuration file: its options, and its `server` settings under
  -- the flags given (which win).
  local conf, cerr = use_config(named)
  if cerr then return usage_error(cerr, "") end
  -- (read again on SIGHUP: by its absolute path, which `reload --config` names too)
  opts.config = conf and (require("kiro.core").realpath(conf.path) or conf.path)
  opts.config_files = conf and conf.files -- the policy plugins it loaded, watched with it
  for name, v in pairs(conf and conf.server or {}) do
    if opts[name] == nil then
      local flag = SERVE_FLAGS["--" .. name:gsub("_", "-")]
      if flag[2] and type(v) ~= "boolean" then
        local checked, err = flag[2]("server." .. name, tostring(v))
        if checked == nil then return usage_error(("config: %s: %s"):format(conf.path, err)) end
        v = checked
      end
      opts[name] = v
    end
  end
  local kiro = require "kiro"
  if opts.log_file then
    -- From here on stderr is the log too: nothing the server says is lost.
    local lok, lerr = kiro.core.log_file(opts.log_file, opts.log_max_bytes or require("kiro.server").LOG_MAX_BYTES)
    if not lok then io.stderr:write("kiro-rt: serve: ", lerr, "\n"); return EXIT_FAIL end
  end
  local pool = { pool_min = opts.pool_min, pool_max = opts.pool_max, cache = opts.cache,
                 max_request_bytes = opts.max_request_bytes }
  opts.pool_min, opts.pool_max, opts.cache, opts.max_request_bytes = nil, nil, nil, nil
  if pool.pool_min and not pool.pool_max and pool.pool_min > kiro.option("pool_max") then
    pool.pool_max = pool.pool_min
  end
  local pok, perr = pcall(kiro.configure, pool)
  if not pok then return usage_error("serve: " .. tostring(perr)) end
  -- A server's log is its only voice: its own lifecycle is always at info.
  local filter = os.getenv("KIRO_LOG")
  if not filter or filter == "" then
    kiro.configure { log = "info" }
  elseif not filter:find("kiro.server", 1, true) then
    pcall(kiro.configure, { log = filter .. ",kiro.server=info" })
  end
  local ok, err, code
  kiro.spawn(function() ok, err, code = require("kiro.server").serve(opts) end)
  local rok, rerr = pcall(kiro.run)
  if not rok then
    io.stderr:write("kiro-rt: serve: ", tostring(rerr), "\n")
    return EXIT_FAIL
  end
  if not ok then
    if code == "busy" then
      err = "a kiro-rt server is already running for you (`kiro-rt status` shows it; `kiro-rt stop` ends it)"
    end
    io.stderr:write("kiro-rt: serve: ", err, "\n")
    return EXIT_FAIL
  end
  return EXIT_OK
end

-- A value as Lua source, for `config check` (tables sorted by key).
local function literal(v, indent)
  if type(v) == "string" then return ("%q"):format(v) end
  if type(v) ~= "table" then
    return (type(v) == "function" or type(v) == "userdata") and '"<' .. type(v) .. '>"' or tostring(v)
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  if #keys == 0 then return "{}" end
  if #keys == #v then -- a list
    local items = {}
    for i = 1, #v do items[i] = literal(v[i], indent) end
    return "{ " .. table.concat(items, ", ") .. " }"
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local pad, parts = (indent or "") .. "  ", {}
  for _, k in ipairs(keys) do
    local name = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. literal(k) .. "]"
    parts[#parts + 1] = pad .. name .. " = " .. literal(v[k], pad) .. ","
  end
  return "{\n" .. table.concat(parts, "\n") .. "\n" .. (indent or "") .. "}"
end

-- kiro-rt config check [FILE]: the file checked whole; what it sets
-- printed as the configuration in force would be, secrets masked.
local function config_cmd(args)
  if args[1] == "-h" or args[1] == "--help" or args[1] ~= "check" or #args > 2 then
    if args[1] == "-h" or args[1] == "--help" then
      io.stdout:write("Usage: kiro-rt config check [FILE]\n\nChecks a configuration file (default: $KIRO_CONFIG, ",
        "else $XDG_CONFIG_HOME/kiro-rt/config.lua) and prints\nthe configuration it gives, secrets masked. ",
        "Exit status 1 when it is unusable.\n")
      return EXIT_OK
    end
    return usage_error("config: expected `kiro-rt config check [FILE]`")
  end
  local configfile = require "kiro.configfile"
  local path = configfile.path(args[2])
  if not path then
    io.stderr:write("kiro-rt: config: no configuration file (--config FILE, $KIRO_CONFIG, or ",
      "$XDG_CONFIG_HOME/kiro-rt/config.lua)\n")
    return EXIT_FAIL
  end
  local conf, err = configfile.load(path)
  if not conf then
    io.stderr:write("kiro-rt: config: ", err, "\n")
    return EXIT_FAIL
  end
  local kiro = require "kiro"
  kiro.configure(conf.options)
  local effective = {}
  for _, name in ipairs(require("kiro.config").option_names()) do
    local ok, v = pcall(kiro.option, name)
    effective[name] = ok and v or nil
  end
  io.stdout:write("-- ", path, ": the configuration it gives (secrets masked)\n",
    "return ", literal(configfile.masked({ options = effective, server = conf.server, channels = conf.channels })),
    "\n")
  return EXIT_OK
end

-- One question to the running server ({ op = op }): its reply, or nil once
-- the trouble is told on stderr (no server, none that talks to us, no answer).
local function ask_server(op, timeout_ms, quiet)
  local conn, err, kind = require("kiro.client").open { autostart = false }
  if not conn then
    -- none answers, or one that will not talk to us (another user's)
    if quiet then return nil end
    io.stderr:write("kiro-rt: ", op == "status" and "" or op .. ": ", "no server running",
      kind == "none" and "" or " (" .. err .. ")", "\n")
    return nil
  end
  conn:send { op = op }
  local reply, rerr = conn:reply(timeout_ms)
  conn:close()
  if not reply then io.stderr:write("kiro-rt: ", op, ": ", rerr, "\n") end
  return reply
end

local function mib(bytes)
  return bytes and ("%.1f MiB"):format(bytes / 1048576) or "?"
end

-- `--config FILE` given to status, stop or reload: the server meant runs
-- with that file. The arguments without it, and check([status]): whether
-- the running server (its status, asked when not given) is the one meant
-- (false once the mismatch is told; true with no --config, or no server:
-- that is told where the command asks), or nil and a usage message.
local function server_config_arg(name, args)
  local rest, named, i = {}, nil, 1
  while args[i] do
    local f, next_i, cferr = config_flag(args, i)
    if cferr then return nil, name .. ": " .. cferr end
    if f then
      named, i = f, next_i
    else
      rest[#rest + 1], i = args[i], i + 1
    end
  end
  local want = named and (require("kiro.core").realpath(named) or named)
  local function check(s)
    if not want then return true end
    s = s or ask_server("status", 5000, true)
    local path = s and s.config and s.config.path
    if not s or path == want then return true end
    io.stderr:write(("kiro-rt: %s: the running server's configuration is %s, not %s (`kiro-rt stop`, then "
      .. "`kiro-rt serve --config %s`)\n"):format(name, path or "none (it runs without a file)", want, named))
    return false
  end
  return rest, check
end

-- `kiro-rt NAME [--json]`: ask() gets the status (nil once it has told
-- the trouble), printed as JSON or by show(status, w), w a printf line.
local function status_command(name, args, help, ask, show)
  local as_json = args[1] == "--json"
  if args[1] and not as_json then
    if args[1] == "-h" or args[1] == "--help" then io.stdout:write(help); return EXIT_OK end
    return usage_error(name .. ": unknown argument '" .. args[1] .. "'")
  end
  local s = ask()
  if not s then return EXIT_FAIL end
  s.op = nil
  if as_json then
    io.stdout:write(require("kiro.core").json_encode(s), "\n")
  else
    show(s, function(...) io.stdout:write(string.format(...), "\n") end)
  end
  return EXIT_OK
end

local function show_server(s, w)
  w("server   pid %d, version %s, up %.1f s, rss %s", s.pid, s.version, s.uptime_ms / 1000, mib(s.rss_bytes))
  w("         %d requests, %d in flight, %d fallbacks, %d connections, %s", s.requests, s.in_flight,
    s.fallbacks or 0, s.connections, s.idle_ms == 0 and "no idle exit" or ("idle exit after %.0f s"):format(
      s.idle_ms / 1000))
  w("socket   %s", s.socket)
  if s.metrics then w("metrics  %s", s.metrics) end
  if s.cache and (s.cache.hits > 0 or s.cache.entries > 0) then
    w("cache    %d entries, %s, %d hits, %d misses, %d evictions, %d coalesced", s.cache.entries,
      mib(s.cache.bytes), s.cache.hits, s.cache.misses, s.cache.evictions, s.cache.coalesced)
  end
  for _, p in ipairs(s.pools or {}) do
    w("pool     %s%s%s (%s, backend %s): %s, %d daemon(s), %d queued, %d restarts%s",
      p.name and p.name .. ": " or "", p.cli,
      p.model and (" --model " .. p.model) or "", p.protocol, p.backend or "?", p.state, p.live, p.queued,
      p.restarts,
      (p.conversations or 0) > 0 and (", %d conversation(s)"):format(p.conversations) or "")
    if p.last_error then w("         last error: %s", p.last_error) end
    for _, d in ipairs(p.daemons or {}) do
      w("  daemon pid %d, %s, served %d, rss %s", d.pid, d.state, d.served, mib(d.rss_bytes))
    end
  end
end

local function status(args)
  local rest, check = server_config_arg("status", args)
  if not rest then return usage_error(check) end
  return status_command("status", rest, "Usage: kiro-rt status [--json] [--config FILE]\n\nShows the running "
    .. "server and its daemons (with --config: the one running with FILE,\nelse an error).\n",
    function()
      local s = ask_server("status", 5000)
      if s and not check(s) then return nil end
      return s
    end, show_server)
end

local function stop(args)
  if args[1] == "-h" or args[1] == "--help" then
    io.stdout:write("Usage: kiro-rt stop [--config FILE]\n\nStops the server: in-flight requests finish (within its\n",
      "stop grace period), then its backends are stopped. With --config: only\nthe one running with FILE.\n")
    return EXIT_OK
  end
  local rest, check = server_config_arg("stop", args)
  if not rest then return usage_error(check) end
  if rest[1] then return usage_error("stop: unknown argument '" .. rest[1] .. "'") end
  if not check() then return EXIT_FAIL end
  local client = require "kiro.client"
  local conn = client.open { autostart = false }
  if not conn then
    io.stdout:write("kiro-rt: no server running\n")
    return EXIT_OK
  end
  local pid = conn.server_pid
  conn:send { op = "stop" }
  local reply, rerr = conn:reply(5000)
  if not reply then io.stderr:write("kiro-rt: stop: ", rerr, "\n"); return EXIT_FAIL end
  -- The server closes our connection once its backends are gone; then it
  -- exits. Wait for that too (it is not our child: watch /proc).
  local kiro = require "kiro"
  while not conn.closed do conn.reply_ev:wait(); conn.reply_ev = kiro.event() end
  conn:close()
  local deadline = kiro.core.now() + 5000
  while client.alive(pid) and kiro.core.now() < deadline do kiro.sleep(5) end
  io.stdout:write(("kiro-rt: server (pid %d) stopped\n"):format(pid))
  return EXIT_OK
end

local BOT_USAGE = [[
Usage: kiro-rt bot [--config FILE] [--watch] [--stop-grace-ms N] [--metrics-listen [HOST:]PORT]
       kiro-rt bot --console [--config FILE]
       kiro-rt bot status [--json]

Answers chats on the channels the configuration file names (its
`channels` table: telegram = { token =, allowed_users = { ID, ... }, ... },
discord = { ... }),
each reply streamed as it is made: typing, then a message edited as the
text grows (stream_mode, draft_update_interval_ms). Only the users and
chats listed in allowed_users and allowed_chats get answers.

--metrics-listen serves Prometheus metrics (messages by channel and
outcome, calls to the services, 429s, time to typing and to the first
text) on [HOST:]PORT (HOST defaults to 127.0.0.1); `kiro-rt bot status`
shows the same for the running bot, and each channel's state.

--console chats on this terminal instead: each line is a message, the
reply streams in; lines are edited as typed, the arrow keys recall earlier
ones (kept between runs); Ctrl-C stops a reply or drops the line being
typed, Ctrl-D ends the console (channels = { console = { system = ... } }
in the file sets it up).

SIGHUP reads the configuration file again (with --watch, so does a change
to it): who may talk, how replies stream and the runtime's options change
from the next message on; a channel added starts, one removed stops, one
whose token or address changed starts anew. SIGINT and SIGTERM stop taking messages,
let the replies under way finish (within --stop-grace-ms, default 10000:
those left are ended with a marker) and exit.
]]

-- The running bot's status, or nil once the trouble is told.
local function ask_bot()
  local conn = require("kiro.client").connect(require("kiro.paths").paths().bot_socket)
  if not conn then
    io.stderr:write("kiro-rt: no bot running\n")
    return nil
  end
  conn:send { op = "status" }
  local s, err = conn:reply(5000)
  conn:close()
  if not s or s.op ~= "status" then
    io.stderr:write("kiro-rt: bot status: ", tostring(err or (s and s.message) or "no answer"), "\n")
    return nil
  end
  return s
end

local function show_bot(s, w)
  w("bot      pid %d, version %s, up %.1f s", s.pid, s.version, s.uptime_ms / 1000)
  local function ms(v) return v and ("%d ms"):format(v) or "-" end
  for _, c in ipairs(s.channels) do
    local m, k = c.messages, c.calls
    w("%-8s %s, %d chat(s), %d replying", c.name, c.state, c.chats, c.replying)
    w("         messages: %d answered, %d failed, %d commands, %d ignored", m.answered, m.failed, m.command,
      m.ignored)
    w("         calls: %d typing, %d sends, %d edits, %d drafts; %d rate-limited (429)", k.typing, k.send, k.edit,
      k.draft, c.rate_limited)
    w("         mean time to typing %s, to the first text %s", ms(c.typing_avg_ms), ms(c.first_text_avg_ms))
  end
end

-- kiro-rt bot status [--json]: what the running bot is doing.
local function bot_status(args)
  return status_command("bot status", args, "Usage: kiro-rt bot status [--json]\n\nShows the running bot's channels: "
    .. "their state, chats,\nreplies under way, messages by outcome, calls, 429s, time to typing and to the first "
    .. "text.\n", ask_bot, show_bot)
end

-- kiro-rt bot: the configured channels' chats, answered.
function bot_cmd(args, console_settings)
  if args[1] == "status" then return bot_status(table.move(args, 2, #args, 1, {})) end
  local named, grace, i, metrics_listen, watch = nil, 10000, 1, nil, false
  local console = console_settings ~= nil
  while args[i] do
    local a = args[i]
    if a == "-h" or a == "--help" then io.stdout:write(BOT_USAGE); return EXIT_OK end
    local f, next_i, cferr = config_flag(args, i)
    if cferr then return usage_error("bot: " .. cferr) end
    if f then
      named, i = f, next_i
    elseif a == "--stop-grace-ms" then
      local v, err = parse_int(a, args[i + 1], 0, MAX_MS)
      if not v then return usage_error(err) end
      grace, i = v, i + 2
    elseif a == "--console" then
      console, i = true, i + 1
    elseif a == "--watch" then
      watch, i = true, i + 1
    elseif a == "--metrics-listen" then
      if not args[i + 1] then return usage_error("bot: --metrics-listen needs [HOST:]PORT") end
      metrics_listen, i = args[i + 1], i + 2
    else
      return usage_error("bot: unknown argument '" .. a .. "'")
    end
  end
  local conf, cerr = use_config(named)
  if cerr then return usage_error(cerr, "") end
  if watch and not conf then
    return usage_error("bot: --watch needs a configuration file (--config FILE, $KIRO_CONFIG, ...)")
  end
  local channels = conf and conf.channels or {}
  if console then -- this terminal, alone: the configuration's console settings, if any
    channels = { console = console_settings or channels.console or {} }
    if next(console_settings or {}) == nil and conf and conf.channels.console then
      channels.console = conf.channels.console
    end
  elseif not next(channels) then
    local how = "channels = { telegram = { token = ..., allowed_users = { ID } } }"
    if conf then
      return usage_error(("bot: %s configures no channels (%s), or --console"):format(conf.path, how), "")
    end
    return usage_error(("bot: no configuration file (none named with --config, no $KIRO_CONFIG, no %s): "
      .. "write one with %s, or chat here with --console"):format(
        require("kiro.configfile").user_path() or "~/.config/kiro-rt/config.lua", how), "")
  end
  local kiro = require "kiro"
  local core = kiro.core
  -- Thousands of chats, each with its own reply under way, make garbage
  -- faster than a default collector cycle (pause 200: the heap doubles)
  -- keeps up with: collect at 1.2x what lives (bench/bot.lua: 12 KiB a
  -- waiting chat instead of 22, for some collector work a bot can spare).
  collectgarbage("incremental", 120, 200)
  local dir = conf and conf.path:match("^(.*)/[^/]*$") or "."
  local b, berr = require("kiro.bot").start(channels, conf and dir)
  if not b then return usage_error("bot: " .. berr, "") end
  local ml
  if metrics_listen then
    local addr
    ml, addr = require("kiro.server").metrics_listener(metrics_listen)
    if not ml then return usage_error("bot: --metrics-listen: " .. addr) end
    core.log("info", "kiro.bot", ("metrics on http://%s/metrics"):format(addr))
  end
  local sl -- `kiro-rt bot status` asks here
  if not console then
    local p = require("kiro.paths").paths()
    local ok, serr = core.secure_dir(p.dir)
    if ok then sl, serr = b:serve_status(p.bot_socket) end
    if not sl then core.log("warn", "kiro.bot", "no status for `kiro-rt bot status`: " .. tostring(serr)) end
  end
  local names = {}
  for name in pairs(channels) do names[#names + 1] = name end
  table.sort(names)
  core.log("info", "kiro.bot", "answering on " .. table.concat(names, ", "))
  local function reloaded(new)
    if not console then b:configure(new.channels) end
  end
  core.handle_hup(function()
    local new = conf and require("kiro.configfile").reload(conf.path)
    if new then reloaded(new) end
  end)
  local watching
  if watch then
    local werr
    watching, werr = require("kiro.configfile").watch(conf.path, conf.files, reloaded)
    if not watching then core.log("warn", "kiro.bot", "cannot watch " .. conf.path .. ": " .. werr) end
  end
  -- What listens or watches goes once the replies are out.
  local function close()
    if ml then ml:close() end
    if sl then sl:close() end
    if watching then watching.stop() end
  end
  -- Every channel ended (a console's input did): the replies finish, then so does the bot.
  kiro.spawn(function()
    b.ended:wait()
    b:idle(math.maxinteger // 2)
    close()
    kiro.shutdown()
  end)
  local signalled
  kiro.on_signal(function(sig)
    -- Ctrl-C stops the reply, or drops the line being typed; not the console
    if console and sig == 2 and (b:cancel_replies() > 0 or b:interrupt()) then return true end
    if signalled then return end -- a second signal: everything ends now
    signalled = sig
    core.log("info", "kiro.bot", ("signal %d: stopping; replies under way finish"):format(sig))
    b:stop()
    kiro.spawn(function()
      b:idle(grace)
      close()
      kiro.shutdown() -- what is left ends (the long polls too)
    end)
    return true -- (the runtime goes on until then)
  end)
  local ok, rerr = pcall(kiro.run)
  if not ok then
    io.stderr:write("kiro-rt: bot: ", tostring(rerr), "\n")
    return EXIT_FAIL
  end
  return EXIT_OK
end

-- kiro-rt reload: the server reads its configuration file again.
local function reload(args)
  if args[1] == "-h" or args[1] == "--help" then
    io.stdout:write("Usage: kiro-rt reload [--config FILE]\n\nHas the server read its configuration file again ",
      "(as SIGHUP does):\nused once all of it checks, else the configuration in force stays and the\n",
      "error is printed (exit status 1). With --config: FILE must be the file\nthe server runs with.\n")
    return EXIT_OK
  end
  local rest, check = server_config_arg("reload", args)
  if not rest then return usage_error(check) end
  if rest[1] then return usage_error("reload: unknown argument '" .. rest[1] .. "'") end
  if not check() then return EXIT_FAIL end
  local reply = ask_server("reload", 10000)
  if not reply then return EXIT_FAIL end
  if reply.op ~= "reloaded" then
    io.stderr:write("kiro-rt: reload: ", tostring(reply.message or reply.op), "\n")
    return EXIT_FAIL
  end
  io.stdout:write("kiro-rt: reloaded ", reply.path, "\n")
  return EXIT_OK
end

--- Runs a kiro-rt command.
---@param args string[] the command line, without the program's name
---@return integer status the exit status
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
  elseif cmd == "config" then
    return config_cmd(rest)
  elseif cmd == "reload" then
    return reload(rest)
  elseif cmd == "bot" then
    return bot_cmd(rest)
  elseif cmd == "serve" then
    return serve(rest)
  elseif cmd == "status" then
    return status(rest)
  elseif cmd == "stop" then
    return stop(rest)
  elseif cmd == nil then
    io.stderr:write(USAGE)
    return EXIT_USAGE
  end
  return usage_error("unknown command '" .. cmd .. "'")
end

return cli
