-- Core benchmarks (run with `make bench`, i.e. `kiro-rt run bench/core.lua`).
--
-- (a) Per-request latency, oneshot vs daemon, with kiro-sim's start-up delay
--     at 150 ms (what a CLI start costs: the seed's "before").
-- (b) The runtime's own overhead per daemon round trip through the Lua API,
--     with a zero-latency kiro-sim, against a bare C pipe ping-pong (two
--     processes exchanging one line) and against the loop a user would write
--     by hand (luv + lua-cjson), pinned to one CPU and free; and the same
--     round trip with kiro-sim speaking ACP.
-- (f) The same round trip with kiro driven by a luv loop (kiro.host.luv,
--     a luv coroutine) against kiro.run (a kiro task), both in lua5.4.
--
-- Figures are ratios from one run on one machine; absolute times vary.
-- Environment: BENCH_QUICK=1 for fewer iterations.

local kiro = require "kiro"
local core = kiro.core

local here = arg[0]:match("^(.*)/[^/]*$") or "."
local util = dofile(here .. "/util.lua")
local q, progress, median = util.q, util.progress, util.median
local build = os.getenv("KIRO_BUILD_DIR") or (here .. "/../build")
local sim = build .. "/kiro-sim"
local quick = os.getenv("BENCH_QUICK") == "1"

local function time_ms(fn)
  local t0 = core.hrtime()
  fn()
  return (core.hrtime() - t0) / 1e6
end

local results = {}

---------------------------------------------------------------------------
-- (a) oneshot vs daemon at a 150 ms start-up cost
progress("(a) oneshot vs daemon, kiro-sim start-up 150 ms")
kiro.configure { cli_path = sim, env = { KIRO_SIM_STARTUP_MS = "150" }, pool_min = 1 }
local oneshot, daemon = {}, {}
local n_oneshot = quick and 3 or 10
for i = 1, n_oneshot do
  oneshot[i] = time_ms(function() assert(kiro.chat("Hello", { mode = "oneshot" })) end)
end
local first = time_ms(function() assert(kiro.chat("Hello")) end) -- starts the daemon
for i = 1, quick and 50 or 300 do
  daemon[i] = time_ms(function() assert(kiro.chat("Hello")) end)
end
results.oneshot_ms = median(oneshot)
results.daemon_first_ms = first
results.daemon_ms = median(daemon)
kiro.reset()

---------------------------------------------------------------------------
-- (b) round-trip overhead. Each figure is its own process, run both pinned
-- to one CPU (taskset -c 0: the exchange's two processes take turns, so the
-- figure is the work done, and the pinned ratio is the runtime's own
-- overhead) and free (the scheduler places them: what a user sees, which
-- varies with placement), in alternating batches so every contender sees
-- the same machine; medians of the batches. The contenders: a bare C pipe
-- ping-pong (the floor), kiro.chat and kiro.stream (bench/roundtrip.lua),
-- and the request loop a user would write by hand with luv and lua-cjson
-- (bench/luv_peer.lua).
progress("(b) daemon round trip: bare pipe ping-pong, kiro.chat, a hand-written luv loop; pinned and free")
local function succeeds(cmd)
  local p = io.popen(cmd .. " >/dev/null 2>&1; echo $?")
  local rc = p:read("l")
  p:close()
  return rc == "0"
end
local placements = { { "pinned", "taskset -c 0 " }, { "free", "" } }
if not succeeds("taskset -c 0 true") then
  progress("(b) taskset is not usable here: only free figures")
  placements = { { "free", "" } }
end
local have_luv = succeeds("lua5.4 -e 'require \"luv\"; require \"cjson\"'")
if not have_luv then progress("(b) lua5.4 with luv and cjson not found (scripts/deps.sh): no hand-written peer") end
local batches, per_batch = quick and 3 or 7, quick and 2000 or 10000
local kiro_rt = build .. "/kiro-rt"
local function figures(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  local t = {}
  for v in out:gmatch("%S+") do t[#t + 1] = tonumber(v) end
  assert(t[1], "no figure from: " .. cmd)
  return t
end
local rt = {}
for _, pl in ipairs(placements) do
  rt[pl[1]] = { pipe = {}, chat = {}, stream = {}, luv = {}, ratio = {}, luv_ratio = {}, acp = {}, acp_ratio = {},
                host_run = {}, host_luv = {}, host_ratio = {} }
end
for i = 1, batches do
  for _, pl in ipairs(placements) do
    local name, pin = pl[1], pl[2]
    local f = rt[name]
    f.pipe[i] = figures(("%s%s %d"):format(pin, q(build .. "/pipe-pingpong"), per_batch))[1]
    local k = figures(("%s%s run %s %s %d"):format(pin, q(kiro_rt), q(here .. "/roundtrip.lua"), q(sim), per_batch))
    f.chat[i], f.stream[i] = k[1], k[2]
    f.ratio[i] = f.chat[i] / f.pipe[i]
    f.acp[i] = figures(("%s%s run %s %s %d acp"):format(pin, q(kiro_rt), q(here .. "/roundtrip.lua"), q(sim),
      per_batch))[1]
    f.acp_ratio[i] = f.acp[i] / f.chat[i]
    if have_luv then
      f.luv[i] = figures(("%slua5.4 %s %s %d"):format(pin, q(here .. "/luv_peer.lua"), q(sim), per_batch))[1]
      f.luv_ratio[i] = f.chat[i] / f.luv[i]
      -- (f): kiro driven by luv, against kiro.run
      local lua_env = ("LUA_PATH=%s LUA_CPATH=%s "):format(
        q(here .. "/../lua/?.lua;" .. here .. "/../lua/?/init.lua;;"), q(build .. "/?.so;;"))
      for _, how in ipairs { "run", "luv" } do
        f["host_" .. how][i] = figures(("%s%slua5.4 %s %s %s %d"):format(lua_env, pin, q(here .. "/host_loop.lua"),
          how, q(sim), per_batch))[1]
      end
      f.host_ratio[i] = f.host_luv[i] / f.host_run[i]
    end
  end
end
results.rt = {}
for name, f in pairs(rt) do
  results.rt[name] = {
    pipe = median(f.pipe), chat = median(f.chat), stream = median(f.stream),
    ratio = median(f.ratio), luv = have_luv and median(f.luv), luv_ratio = have_luv and median(f.luv_ratio),
    acp = median(f.acp), acp_ratio = median(f.acp_ratio),
    host_run = have_luv and median(f.host_run), host_luv = have_luv and median(f.host_luv),
    host_ratio = have_luv and median(f.host_ratio),
  }
end
kiro.configure { env = false }

---------------------------------------------------------------------------
-- (c) throughput, zero-latency kiro-sim: pool sizes 1, 2, 4, pipelining off
-- (depth 1) and on (depth 8), 16 tasks issuing requests at once.
progress("(c) throughput by pool size and pipelining")
-- Runs fn in n tasks at once and waits for all (we are a task ourselves).
local function parallel(n, fn)
  local left, done = n, kiro.event()
  for i = 1, n do
    kiro.spawn(function()
      fn(i)
      left = left - 1
      if left == 0 then done:set() end
    end)
  end
  done:wait()
end

local function throughput(size, depth, total)
  kiro.reset()
  kiro.configure { pool_min = size, pool_max = size, pipeline_depth = depth }
  parallel(size, function() assert(kiro.chat("warm")) end)
  local workers, per = 16, total // 16
  local t0 = core.hrtime()
  parallel(workers, function() for _ = 1, per do assert(kiro.chat("ping")) end end)
  return workers * per / ((core.hrtime() - t0) / 1e9)
end
local total = quick and 1600 or 16000
results.tput = {}
for _, size in ipairs { 1, 2, 4 } do
  results.tput[size] = { throughput(size, 1, total), throughput(size, 8, total) }
end
kiro.reset()
kiro.configure { pool_min = 1, pool_max = 4, pipeline_depth = 1 }

---------------------------------------------------------------------------
-- (d) a cache hit against a daemon round trip.
progress("(d) cache hit vs daemon round trip")
assert(kiro.chat("cached prompt", { cache = true }))
local n = quick and 2000 or 20000
local t0 = core.hrtime()
for _ = 1, n do assert(kiro.chat("cached prompt", { cache = true })) end
results.hit_us = (core.hrtime() - t0) / 1e3 / n
t0 = core.hrtime()
for _ = 1, n do assert(kiro.chat("ping")) end
results.miss_us = (core.hrtime() - t0) / 1e3 / n

---------------------------------------------------------------------------
-- (e) memory stays bounded: resident memory after 1,000, 20,000 and 100,000
-- requests (distinct prompts, cache on and bounded at 1 MiB, so it fills and
-- evicts; and with the cache off).
progress("(e) memory after 1,000, 20,000 and 100,000 requests")
local function rss()
  local f = assert(io.open("/proc/self/statm"))
  local _, pages = f:read("n", "n")
  f:close()
  return pages * 4096
end
local big = quick and 20000 or 100000
local function memory_run(cached)
  kiro.reset()
  kiro.configure { cache = cached, cache_max_bytes = 1024 * 1024 }
  local i, out = 0, {}
  for _, k in ipairs { 1000, 20000, big } do
    while i < k do i = i + 1; assert(kiro.chat("distinct prompt " .. i)) end
    collectgarbage()
    out[#out + 1] = rss()
  end
  return out
end
results.mem_off = memory_run(false)
results.mem_on = memory_run(true)
results.big = big
results.cache_bytes = kiro.stats().cache.bytes
kiro.configure { cache = false }
kiro.reset()

---------------------------------------------------------------------------
local r = results
local lines = {
  "kiro-rt core benchmark (one run; medians)",
  "",
  "(a) per-request latency, kiro-sim start-up 150 ms",
  ("    oneshot (spawn per call)          %9.2f ms"):format(r.oneshot_ms),
  ("    daemon, first call (starts it)    %9.2f ms"):format(r.daemon_first_ms),
  ("    daemon, warm                      %9.3f ms"):format(r.daemon_ms),
  ("    warm daemon / oneshot             %9.2f %%   (goal <= 3%%)"):format(100 * r.daemon_ms / r.oneshot_ms),
  "",
  ("(b) round trip, zero-latency kiro-sim (%d batches of %d, alternating)"):format(batches, per_batch),
  ("    %-36s %10s %10s"):format("", "pinned", "free"),
}
local function row(label, key, fmt)
  local cells = {}
  for _, name in ipairs { "pinned", "free" } do
    local v = r.rt[name] and r.rt[name][key]
    cells[#cells + 1] = v and (fmt):format(v) or "-"
  end
  lines[#lines + 1] = ("    %-36s %10s %10s"):format(label, cells[1], cells[2])
end
row("bare C pipe ping-pong (us)", "pipe", "%.2f")
row("kiro.chat via daemon (us)", "chat", "%.2f")
row("kiro.stream via daemon, 4 chunks (us)", "stream", "%.2f")
row("luv + lua-cjson loop by hand (us)", "luv", "%.2f")
row("kiro.chat / pipe ping-pong", "ratio", "%.2f x")
row("kiro.chat / luv loop", "luv_ratio", "%.2f x")
row("kiro.chat via an ACP agent (us)", "acp", "%.2f")
row("ACP kiro.chat / JSON Lines kiro.chat", "acp_ratio", "%.2f x")
for _, l in ipairs {
  "    (pinned: the runtime's own overhead, goal <= 2x the ping-pong and <= 1x the luv loop;",
  "     ACP (session/new + session/prompt per call): goal <= 1.5x JSON Lines;",
  "     free: what placement adds, machine-dependent; medians of per-batch ratios)",
  "",
  "(c) throughput, zero-latency kiro-sim, 16 concurrent tasks (requests/s)",
  "    pool size    pipelining off   pipelining on (depth 8)   on/off",
} do lines[#lines + 1] = l end
for _, size in ipairs { 1, 2, 4 } do
  local t = r.tput[size]
  lines[#lines + 1] = ("    %9d    %14.0f   %23.0f   %6.2f x"):format(size, t[1], t[2], t[2] / t[1])
end
for _, l in ipairs {
  "",
  "(d) cache",
  ("    cache hit                         %9.2f us"):format(r.hit_us),
  ("    daemon round trip                 %9.2f us"):format(r.miss_us),
  ("    hit / round trip                  %9.2f x"):format(r.hit_us / r.miss_us),
  "",
  "(e) resident memory (MiB) after N requests with distinct prompts",
  ("    %-28s %9s %9s %9s"):format("", "1,000", "20,000", tostring(r.big)),
  ("    %-28s %9.2f %9.2f %9.2f"):format("cache off", r.mem_off[1] / 1048576, r.mem_off[2] / 1048576,
    r.mem_off[3] / 1048576),
  ("    %-28s %9.2f %9.2f %9.2f"):format("cache on, bounded at 1 MiB", r.mem_on[1] / 1048576,
    r.mem_on[2] / 1048576, r.mem_on[3] / 1048576),
  "",
  "(f) kiro driven by a luv loop (kiro.host.luv) against kiro.run, kiro.chat round trip",
  ("    %-36s %10s %10s"):format("", "pinned", "free"),
} do lines[#lines + 1] = l end
row("kiro.run, a kiro task (us)", "host_run", "%.2f")
row("a luv loop, a luv coroutine (us)", "host_luv", "%.2f")
row("luv-driven / kiro.run", "host_ratio", "%.2f x")
lines[#lines + 1] = "    (goal <= 1.2x)"
print(table.concat(lines, "\n"))
