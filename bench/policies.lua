-- Configuration benchmarks (run with `make bench`, i.e.
-- `kiro-rt run bench/policies.lua`).
--
-- (g) The cost of a reload: the time from the reload's start (the SIGHUP
--     handler, or `kiro-rt reload`, calls configfile.reload) to the new
--     configuration swapped in, with 4 named backends and 16 warm daemons,
--     alternating two files whose policies differ; and whether the daemons
--     are the same ones afterwards.
-- (h) One request through three composed policies (route, redact,
--     failover) against none: kiro.chat round trips with a zero-latency
--     kiro-sim, in alternating batches, medians.
--
-- Figures are from one run on one machine; ratios are what to compare.
-- Environment: BENCH_QUICK=1 for fewer iterations.

local kiro = require "kiro"
local core = kiro.core
local configfile = require "kiro.configfile"

local here = arg[0]:match("^(.*)/[^/]*$") or "."
local util = dofile(here .. "/util.lua")
local progress, median = util.progress, util.median
local build = os.getenv("KIRO_BUILD_DIR") or (here .. "/../build")
local sim = build .. "/kiro-sim"
local quick = os.getenv("BENCH_QUICK") == "1"

local dir = util.tmpdir()
local path = dir .. "/config.lua"

-- A configuration file: four backends of four warm daemons each, and
-- three policies (the failover chain's cool-down differs between `a` and `b`).
local function write_config(variant)
  util.write(path, ([[
local sim = %q
local function backend(model) return { cli_path = sim, model = model, pool_min = 4, pool_max = 4 } end
return {
  backends = { one = backend("one"), two = backend("two"), three = backend("three"), four = backend("four") },
  default_backend = "one",
  policies = {
    { "route", rules = { { prefix = "/two ", strip = true, backend = "two" },
                         { min_chars = 4000, backend = "three" } } },
    { "redact" },
    { "failover", chain = { "one", "four" }, cooldown_ms = %d },
  },
}
]]):format(sim, variant == "a" and 30000 or 20000))
  util.sh("chmod 600 " .. util.q(path))
end

local function daemon_pids()
  local pids = {}
  for _, p in ipairs(kiro.stats().pools) do
    for _, d in ipairs(p.daemons) do pids[#pids + 1] = d.pid end
  end
  table.sort(pids)
  return table.concat(pids, ",")
end

---------------------------------------------------------------------------
-- (g) reload
progress("(g) reload with 4 backends and 16 warm daemons")
write_config("a")
assert(configfile.reload(path))
local deadline = core.now() + 10000
while select(2, daemon_pids():gsub("%d+", "")) < 16 do
  assert(core.now() < deadline, "16 daemons did not start")
  kiro.sleep(10)
end
assert(kiro.chat("warm"))
local before = daemon_pids()
local times = {}
for i = 1, quick and 20 or 100 do
  write_config(i % 2 == 1 and "b" or "a")
  local t0 = core.hrtime()
  assert(configfile.reload(path))
  times[i] = (core.hrtime() - t0) / 1e6
  assert(kiro.chat("after " .. i)) -- requests between reloads, as in life
end
local reload_max = math.max(table.unpack(times))
local reload_ms = median(times)
local same = daemon_pids() == before

---------------------------------------------------------------------------
-- (h) three composed policies against none
progress("(h) kiro.chat round trip through three composed policies, and through none")
local batches, per_batch = quick and 3 or 9, quick and 500 or 3000
local function batch()
  local t0 = core.hrtime()
  for i = 1, per_batch do assert(kiro.chat("hello " .. (i % 7))) end
  return (core.hrtime() - t0) / 1e3 / per_batch
end
-- The same backends (the file's) both ways; only the policies change.
local three = {
  { "route", rules = { { prefix = "/two ", strip = true, backend = "two" }, { min_chars = 4000, backend = "three" } } },
  { "redact" },
  { "failover", chain = { "one", "four" } },
}
local with, without = {}, {}
for b = 1, batches do
  kiro.configure { policies = false }
  without[b] = batch()
  kiro.configure { policies = three }
  with[b] = batch()
end
local t_with, t_without = median(with), median(without)

-- What the hooks cost on their own, per request (route + redact + failover).
local g = require("kiro.config").current()
local call = require "kiro.call"
local n = quick and 20000 or 200000
local opts = call.check_opts("bench", "hello there", nil)
local t0 = core.hrtime()
for _ = 1, n do call.route("hello there", opts, g) end
local hooks_us = (core.hrtime() - t0) / 1e3 / n

kiro.configure { policies = false, backends = false, default_backend = false }
kiro.reset()
os.execute("rm -rf " .. util.q(dir))

print(table.concat({
  "kiro-rt configuration benchmark (one run; medians)",
  "",
  "(g) reload: 4 backends, 16 warm daemons, two files alternating",
  ("    load, check, swap (median)        %9.2f ms"):format(reload_ms),
  ("    the slowest                       %9.2f ms"):format(reload_max),
  ("    daemons the same afterwards       %9s"):format(same and "yes" or "NO"),
  "",
  ("(h) kiro.chat round trip, zero-latency kiro-sim (%d batches of %d, alternating)"):format(batches, per_batch),
  ("    no policies                       %9.2f us"):format(t_without),
  ("    route + redact + failover         %9.2f us"):format(t_with),
  ("    three policies / none             %9.2f x"):format(t_with / t_without),
  ("    the route hooks alone             %9.2f us per request"):format(hooks_us),
}, "\n"))
