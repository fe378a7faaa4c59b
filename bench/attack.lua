-- The attacks of issue 7, measured (run with `make bench`, or
-- `lua5.4 bench/attack.lua` with KIRO_BUILD_DIR set). Figures from one run
-- on one machine; what matters is how they compare with the bounds.
--
--   (a) cool-down: 8 tasks streaming 500 requests each against a backend
--       that crashes mid-stream on every 50th request of a daemon, with the
--       default restart limit and its 60 s cool-down; the slowest request,
--       in-process and through the server (before the fix: 60.0 s)
--   (b) server memory: four 250 MB request lines at once and three clients
--       that never read 200 replies of 1 MiB; the server's peak resident
--       memory against the README's MemoryMax=512M, and an agent served
--       meanwhile
--   (c) agent memory: a 100 MB prompt on stdin, peak resident memory as a
--       multiple of the prompt (before: 588 MB)
--
-- Environment: BENCH_QUICK=1 for smaller runs.

local cjson = require "cjson"

local here = arg[0]:match("^(.*)/[^/]*$") or "."
local util = dofile(here .. "/util.lua")
local q, sh, progress, read, write = util.q, util.sh, util.progress, util.read, util.write
local build = os.getenv("KIRO_BUILD_DIR") or (here .. "/../build")
local kiro_rt, sim, peer = build .. "/kiro-rt", build .. "/kiro-sim", build .. "/kiro-test-peer"
local quick = os.getenv("BENCH_QUICK") == "1"

local tmp = util.tmpdir()
sh("mkdir -m 700 -p " .. q(tmp .. "/run") .. " " .. q(tmp .. "/state/kiro-rt"))
local env = ("KIRO_CLI_PATH=%s XDG_RUNTIME_DIR=%s XDG_STATE_HOME=%s KIRO_LOG=error")
  :format(q(sim), q(tmp .. "/run"), q(tmp .. "/state"))
local socket = tmp .. "/run/kiro-rt/server.sock"

local function start_server(args)
  sh(("env %s %s serve --log-file %s %s </dev/null >/dev/null 2>&1 &")
    :format(env, q(kiro_rt), q(tmp .. "/state/kiro-rt/server.log"), args or ""))
  for _ = 1, 500 do
    if os.execute(("env %s %s status >/dev/null 2>&1"):format(env, q(kiro_rt))) then break end
    os.execute("sleep 0.01")
  end
  local p = io.popen(("env %s %s status --json"):format(env, q(kiro_rt)))
  local s = cjson.decode(p:read("a"))
  p:close()
  return math.tointeger(s.pid)
end
local function stop_server() sh(("env %s %s stop >/dev/null"):format(env, q(kiro_rt))) end

local results = {}

---------------------------------------------------------------------------
-- (a) cool-down
local tasks, per_task = 8, quick and 100 or 500
progress(("(a) %d tasks x %d streams, a crash every 50th request of each daemon"):format(tasks, per_task))
local script = tmp .. "/cooldown.lua"
-- Run by `kiro-rt run`, as a task: it starts the workload's tasks, waits
-- for them, and prints the slowest request and the outcomes as JSON.
write(script, ([[
local kiro = require "kiro"
local through = ...
local client = through == "server" and require "kiro.client"
local env = { KIRO_SIM_FAULT = "crash-mid-stream", KIRO_SIM_FAULT_EVERY = "50" }
local worst, outcomes, left, all_done = 0, {}, %d, kiro.event()
for t = 1, %d do
  kiro.spawn(function()
    local c = client and assert(client.connect(%q))
    for i = 1, %d do
      local prompt = ("t%%d q%%d a b c"):format(t, i)
      local t0 = kiro.core.hrtime()
      local ok, err = pcall(function()
        local iter = c and c:request(prompt, { cli = %q, env = env })
                       or kiro.stream(prompt, { env = env })
        for _ in iter do end
      end)
      worst = math.max(worst, (kiro.core.hrtime() - t0) / 1e6)
      local code = ok and "ok" or err.code
      outcomes[code] = (outcomes[code] or 0) + 1
    end
    if c then c:close() end
    left = left - 1
    if left == 0 then all_done:set() end
  end)
end
all_done:wait()
print(require("cjson").encode { worst_ms = worst, outcomes = outcomes })
]]):format(tasks, tasks, socket, per_task, sim))

local function cooldown(through)
  local p = io.popen(("env %s %s run %s %s"):format(env, q(kiro_rt), q(script), through))
  local out = p:read("a")
  p:close()
  return cjson.decode(out)
end
local r = cooldown("inproc")
results.cooldown_inproc_worst_ms = r.worst_ms
results.cooldown_inproc_outcomes = r.outcomes
start_server()
r = cooldown("server")
results.cooldown_server_worst_ms = r.worst_ms
results.cooldown_server_outcomes = r.outcomes
stop_server()

---------------------------------------------------------------------------
-- (b) server memory under four huge lines and three clients that never read
local line_bytes = quick and 50 * 1000 * 1000 or 250 * 1000 * 1000
progress(("(b) four %d MB request lines at once, three clients that never read 200 replies of 1 MiB")
  :format(line_bytes // 1000000))
local server_pid = start_server()
local base = tonumber(read("/proc/" .. server_pid .. "/status"):match("VmRSS:%s+(%d+)"))
local reqs = tmp .. "/requests"
local f = assert(io.open(reqs, "wb"))
local mib = ("m"):rep(1024 * 1024)
for i = 1, 200 do
  f:write(cjson.encode { op = "request", id = i, prompt = mib, stream = false, backend = { cli = sim } }, "\n")
end
f:close()
local pids = {}
local function bg(cmd)
  local pf = tmp .. "/pid" .. (#pids + 1)
  sh(("%s >%s.out 2>&1 & echo $! >%s"):format(cmd, pf, pf))
  pids[#pids + 1] = pf
end
for _ = 1, 4 do bg(("%s flood %s %d"):format(q(peer), q(socket), line_bytes)) end
for _ = 1, 3 do bg(("%s noread %s %s"):format(q(peer), q(socket), q(reqs))) end
local function all_ready()
  for _, pf in ipairs(pids) do
    if not (read(pf .. ".out") or ""):find("ready") then return false end
  end
  return true
end
local t0 = os.time()
while not all_ready() and os.time() - t0 < 120 do os.execute("sleep 0.05") end
local served = os.execute(("env %s %s agent -m meanwhile >/dev/null"):format(env, q(kiro_rt)))
for _, pf in ipairs(pids) do os.execute("kill " .. read(pf):match("%d+")) end
local status = read("/proc/" .. server_pid .. "/status")
results.server_base_kb = base
results.server_peak_kb = tonumber(status:match("VmHWM:%s+(%d+)"))
results.server_served_meanwhile = served and true or false
stop_server()

---------------------------------------------------------------------------
-- (c) the agent's memory for a 100 MB prompt on stdin
local prompt_bytes = quick and 20 * 1000 * 1000 or 100 * 1000 * 1000
progress(("(c) kiro-rt agent, a %d MB prompt on stdin"):format(prompt_bytes // 1000000))
server_pid = start_server(("--max-request-bytes %d --max-buffered-bytes %d"):format(2 * prompt_bytes, 4 * prompt_bytes))
local words, n = {}, 0
while n < prompt_bytes do
  local w = "w" .. #words
  words[#words + 1] = w
  n = n + #w + 1
end
write(tmp .. "/prompt", table.concat(words, " "))
local out = io.popen(("env %s %s maxrss %s agent <%s 2>&1 >/dev/null")
  :format(env, q(peer), q(kiro_rt), q(tmp .. "/prompt"))):read("a")
results.agent_prompt_bytes = #read(tmp .. "/prompt")
results.agent_peak_kb = tonumber(out:match("maxrss (%d+)"))
results.server_peak_for_prompt_kb = tonumber(read("/proc/" .. server_pid .. "/status"):match("VmHWM:%s+(%d+)"))
stop_server()
sh("rm -rf " .. q(tmp))

---------------------------------------------------------------------------
local function fmt_outcomes(o)
  local parts = {}
  for k, v in pairs(o) do parts[#parts + 1] = ("%s %d"):format(k, v) end
  table.sort(parts)
  return table.concat(parts, ", ")
end
print("issue 7 attacks, measured:")
print(("(a) slowest of %d streams with a crash every 50th: in-process %.0f ms (%s),")
  :format(tasks * per_task, results.cooldown_inproc_worst_ms, fmt_outcomes(results.cooldown_inproc_outcomes)))
print(("    through the server %.0f ms (%s); the cool-down is 60000 ms")
  :format(results.cooldown_server_worst_ms, fmt_outcomes(results.cooldown_server_outcomes)))
print(("(b) server peak resident %.0f MB (idle %.1f MB) under four %d MB lines and three non-readers;")
  :format(results.server_peak_kb / 1024, results.server_base_kb / 1024, line_bytes // 1000000))
print(("    bound 512 MB; another client served meanwhile: %s"):format(tostring(results.server_served_meanwhile)))
print(("(c) agent peak resident %.0f MB for a %.0f MB prompt on stdin: %.2fx (goal: under 2x plus a constant);")
  :format(results.agent_peak_kb / 1024, results.agent_prompt_bytes / 1048576,
    results.agent_peak_kb * 1024 / results.agent_prompt_bytes))
print(("    the server's peak while serving it %.0f MB (%.1fx)"):format(results.server_peak_for_prompt_kb / 1024,
  results.server_peak_for_prompt_kb * 1024 / results.agent_prompt_bytes))
