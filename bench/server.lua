-- The seed's benchmark (seed-spec section 5), reproduced with the real
-- kiro-rt binary and kiro-sim costing what a CLI start costs (150 ms).
-- Run with `make bench` (needs hyperfine). Medians; ratios from this one run.
--
--   floor    exec `kiro-rt --version`
--   oneshot  KIRO_USE_DAEMON=false kiro-rt agent -m Hello
--   cold     first call: starts the server and its daemon
--   warm     later calls, served by the warm daemon through the server
--   10x      ten concurrent agents, 100 ms backend latency, 10 warm daemons,
--            against one agent with the same latency
--   memory   the server's resident memory with 4 idle daemons

local cjson = require "cjson"

local here = arg[0]:match("^(.*)/[^/]*$") or "."
local util = dofile(here .. "/util.lua")
local q, sh, progress = util.q, util.sh, util.progress
local root = here .. "/.."
local build = os.getenv("KIRO_BUILD_DIR") or (root .. "/build")
local kiro_rt = build .. "/kiro-rt"
local quick = os.getenv("BENCH_QUICK") == "1"

if not os.execute("command -v hyperfine >/dev/null 2>&1") then
  io.stderr:write("bench: hyperfine is needed (sh scripts/deps.sh installs it)\n")
  os.exit(2)
end

local tmp = util.tmpdir()
sh("mkdir -m 700 -p " .. q(tmp .. "/run") .. " " .. q(tmp .. "/state"))
local base_env = {
  KIRO_CLI_PATH = build .. "/kiro-sim",
  KIRO_SIM_STARTUP_MS = "150",
  XDG_RUNTIME_DIR = tmp .. "/run",
  XDG_STATE_HOME = tmp .. "/state",
  KIRO_LOG = "warn",
}

local function envs(extra)
  local parts = {}
  for k, v in pairs(base_env) do
    if not (extra and extra[k] == false) then parts[#parts + 1] = q(k .. "=" .. v) end
  end
  for k, v in pairs(extra or {}) do
    if v ~= false then parts[#parts + 1] = q(k .. "=" .. v) end
  end
  return "env " .. table.concat(parts, " ")
end

-- hyperfine: the median of `cmd`, in seconds.
local function hyperfine(cmd, opts)
  opts = opts or {}
  local out = tmp .. "/hf.json"
  local args = { "hyperfine", "--style", "none", "--export-json", q(out),
                 "--warmup", tostring(opts.warmup or 3), "--runs", tostring(opts.runs or 20) }
  if opts.shell then
    args[#args + 1] = "--shell=sh"
  else
    args[#args + 1] = "-N"
  end
  if opts.prepare then args[#args + 1] = "--prepare " .. q(opts.prepare) end
  args[#args + 1] = q(cmd)
  sh(envs(opts.env) .. " " .. table.concat(args, " ") .. " >/dev/null")
  return cjson.decode((assert(util.read(out), "no hyperfine results in " .. out))).results[1].median
end

local function status()
  local p = io.popen(envs() .. " " .. q(kiro_rt) .. " status --json 2>/dev/null")
  local text = p:read("a")
  p:close()
  return text ~= "" and cjson.decode(text) or nil
end

local function stop() sh(envs() .. " " .. q(kiro_rt) .. " stop >/dev/null") end

local function serve(args, extra)
  stop()
  sh(("%s %s serve %s </dev/null >>%s 2>&1 &"):format(envs(extra), q(kiro_rt), args, q(tmp .. "/serve.log")))
  for _ = 1, 500 do
    if status() then return end
    sh("sleep 0.01")
  end
  error("the server did not come up")
end

local r = {}
local runs = quick and 5 or 30

progress("floor: kiro-rt --version")
r.floor = hyperfine(kiro_rt .. " --version", { runs = runs })

progress("oneshot x" .. (quick and 3 or 5))
r.oneshot = hyperfine(kiro_rt .. " agent -m Hello", { env = { KIRO_USE_DAEMON = "false" }, warmup = 1,
  runs = quick and 3 or 5 })

progress("daemon, first call (starts server and daemon)")
r.cold = hyperfine(kiro_rt .. " agent -m Hello", { warmup = 0, runs = quick and 2 or 5,
  prepare = envs() .. " " .. kiro_rt .. " stop" , shell = false })

progress("daemon, warm calls")
r.warm = hyperfine(kiro_rt .. " agent -m Hello", { runs = runs })
-- The ratio from alternating batches of the two, so both see the same
-- machine (on a shared host the floor alone drifts by a third within a
-- minute): the median of the per-batch ratios.
progress("warm calls against the floor, alternating batches")
do
  local ratios = {}
  for i = 1, quick and 3 or 9 do
    local floor = hyperfine(kiro_rt .. " --version", { runs = 15, warmup = 2 })
    local warm = hyperfine(kiro_rt .. " agent -m Hello", { runs = 15, warmup = 2 })
    ratios[i] = warm / floor
  end
  r.warm_ratio = util.median(ratios)
end

-- An ACP agent that takes as long to start as gemini --acp (1250 ms to
-- answer initialize): the first call starts the server and the agent, the
-- warm ones find it initialized, with a session made ahead.
progress("ACP agent at 1250 ms start-up: first call, then warm calls")
local acp = { KIRO_SIM_STARTUP_MS = "1250", KIRO_PROTOCOL = "acp" }
r.acp_cold = hyperfine(kiro_rt .. " agent -m Hello", { env = acp, warmup = 0, runs = quick and 2 or 3,
  prepare = envs(acp) .. " " .. kiro_rt .. " stop" })
r.acp_warm = hyperfine(kiro_rt .. " agent -m Hello", { env = acp, runs = runs })

progress("10 concurrent agents vs one, 100 ms backend latency, 10 warm daemons")
serve("--pool-min 10 --pool-max 10", { KIRO_SIM_LATENCY_MS = "100" })
local lat = { KIRO_SIM_LATENCY_MS = "100", KIRO_RT = kiro_rt }
r.single = hyperfine(kiro_rt .. " agent -m 'Test 1' >/dev/null", { env = lat, shell = true, runs = quick and 5 or 15 })
r.ten = hyperfine("sh " .. root .. "/bench/ten.sh", { env = lat, shell = true, runs = quick and 5 or 15 })

progress("server memory with 4 idle daemons")
serve("--pool-min 4 --pool-max 4")
sh(envs() .. " " .. q(kiro_rt) .. " agent -m Hello >/dev/null")
local s
for _ = 1, 500 do
  s = status()
  if s and s.pools[1] and s.pools[1].live == 4 then break end
  sh("sleep 0.01")
end
r.rss = s.rss_bytes
local daemon_rss = 0
for _, d in ipairs(s.pools[1].daemons) do daemon_rss = daemon_rss + (d.rss_bytes or 0) end
r.daemons_rss = daemon_rss
stop()
sh("rm -rf " .. q(tmp))

local ms = function(sec) return sec * 1000 end
local lines = {
  "kiro-rt server benchmark: the seed's tests with kiro-sim at 150 ms start-up (medians, one run)",
  "",
  ("%-44s %10s %12s"):format("test", "seed claim", "kiro-rt"),
  ("%-44s %10s %10.2f ms"):format("exec kiro-rt --version (floor)", "", ms(r.floor)),
  ("%-44s %10s %10.2f ms"):format("oneshot (KIRO_USE_DAEMON=false)", "200 ms", ms(r.oneshot)),
  ("%-44s %10s %10.2f ms"):format("daemon, first call (starts server+daemon)", "180 ms", ms(r.cold)),
  ("%-44s %10s %10.2f ms"):format("daemon, warm call", "5-12 ms", ms(r.warm)),
  ("%-44s %10s %10.2f ms"):format("one agent, 100 ms backend latency", "", ms(r.single)),
  ("%-44s %10s %10.2f ms"):format("10 concurrent agents, 100 ms latency", "156 ms", ms(r.ten)),
  ("%-44s %10s %10.2f MiB"):format("server RSS, 4 idle daemons", "50 MB", r.rss / 1048576),
  ("%-44s %10s %10.2f MiB"):format("  (the 4 kiro-sim daemons together)", "", r.daemons_rss / 1048576),
  "",
  ("warm call / --version exec     %6.2f x   (goal <= 1.3x; median of alternating batches)"):format(r.warm_ratio),
  ("warm call / oneshot            %6.2f %%   (goal <= 5%%)"):format(100 * r.warm / r.oneshot),
  ("10 concurrent / single call    %6.2f x   (goal <= 1.5x)"):format(r.ten / r.single),
  ("ACP agent, 1250 ms start-up: first call %.1f ms, warm %.2f ms"):format(ms(r.acp_cold), ms(r.acp_warm)),
  ("warm ACP call / first ACP call %6.2f %%   (goal <= 1%%)"):format(100 * r.acp_warm / r.acp_cold),
  ("server RSS                     %6.2f MiB (goal < 8 MiB)"):format(r.rss / 1048576),
}
print(table.concat(lines, "\n"))
