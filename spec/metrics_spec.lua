-- Prometheus metrics: kiro.metrics() and `kiro-rt serve --metrics-listen`.
local H = require "helper"

local function promtool_check(text)
  local f = H.tmpdir() .. "/metrics.txt"
  H.write_file(f, text)
  local r = H.run({ "promtool", "check", "metrics" }, {}, text)
  return r.code == 0, (r.out or "") .. (r.err or ""), f
end

local function sample(text, name, labels)
  for line in text:gmatch("[^\n]+") do
    local n, l, v = line:match("^([%w_]+)(%b{}) (%S+)$")
    if not n then n, v = line:match("^([%w_]+) (%S+)$"); l = "" end
    if n == name then
      local all = true
      for k, want in pairs(labels or {}) do
        if not (l or ""):find(('%s="%s"'):format(k, want), 1, true) then all = false end
      end
      if all then return tonumber(v) end
    end
  end
end

describe("metrics", function()
  after_each(H.check_leaks)

  it("kiro.metrics() passes promtool and counts what happened", function()
    local kiro = H.setup({}, { cache = true })
    kiro.chat("a")
    kiro.chat("a") -- a cache hit
    for _ in kiro.stream("b c") do end
    kiro.chat("z", { model = "m", cache = false })
    local text = kiro.metrics()
    local ok, out = promtool_check(text)
    assert(ok, out)
    assert.are.equal(1, sample(text, "kiro_requests_total", { mode = "cache", outcome = "ok" }))
    assert.is_true(sample(text, "kiro_requests_total", { mode = "daemon", outcome = "ok" }) >= 2)
    assert.are.equal(1, sample(text, "kiro_requests_total", { model = "m" }))
    assert.is_true(sample(text, "kiro_cache_hits_total") >= 1)
    assert.is_true(sample(text, "kiro_cache_bytes") > 0)
    assert.is_true(sample(text, "kiro_daemons", { state = "ready" }) >= 1)
    assert.is_true(sample(text, "process_resident_memory_bytes") > 0)
    assert.is_true(sample(text, "kiro_request_duration_seconds_count", { mode = "daemon" }) >= 2)
    assert.is_true(sample(text, "kiro_first_chunk_seconds_count", { mode = "daemon" }) >= 2)
    assert.is_not_nil(sample(text, "kiro_queue_depth"))
  end)

  it("counts requests by protocol, ACP permission decisions and auth failures", function()
    local kiro = H.setup({ KIRO_SIM_ACP_PERMISSION = 1 }, { protocol = "acp" })
    local function counts()
      local text = kiro.metrics()
      return {
        jsonl = sample(text, "kiro_daemon_requests_total", { protocol = "jsonl" }),
        acp = sample(text, "kiro_daemon_requests_total", { protocol = "acp" }),
        asked = sample(text, "kiro_permission_requests_total"),
        defaults = sample(text, "kiro_permission_defaults_total"),
        allow = sample(text, "kiro_permission_decisions_total", { outcome = "allow" }) or 0,
        option = sample(text, "kiro_permission_decisions_total", { outcome = "option" }) or 0,
        auth = sample(text, "kiro_auth_failures_total"),
      }, text
    end
    local c0 = counts()
    kiro.chat("a")                                              -- the default answers
    kiro.chat("b", { permission = function() return "allow" end })
    kiro.chat("c", { permission = function() return "sim-reject" end })
    kiro.chat("d", { protocol = "jsonl" })
    local c, text = counts()
    assert.are.same({ jsonl = c0.jsonl + 1, acp = c0.acp + 3, asked = c0.asked + 3, defaults = c0.defaults + 1,
                      allow = c0.allow + 1, option = c0.option + 1, auth = c0.auth }, c)
    kiro = H.setup({ KIRO_SIM_FAULT = "auth" }, { protocol = "acp" })
    kiro.chat("e")
    assert.are.equal(c0.auth + 1, counts().auth)
    assert(promtool_check(text))
  end)

  it("counts fallbacks by reason and failures by outcome", function()
    local kiro = H.setup({ KIRO_SIM_FAULT = "no-daemon,no-acp" }, { log = "error" })
    kiro.chat("x")
    local text = kiro.metrics()
    assert.is_true(sample(text, "kiro_fallbacks_total", { reason = "spawn" }) >= 1)
    assert.is_true(sample(text, "kiro_requests_total", { mode = "oneshot", outcome = "ok" }) >= 1)
    kiro = H.setup({ KIRO_SIM_FAULT = "error" })
    kiro.chat("y")
    text = kiro.metrics()
    assert.is_true(sample(text, "kiro_requests_total", { outcome = "backend" }) >= 1)
    assert(promtool_check(text))
  end)
end)

describe("the metrics endpoint", function()
  after_each(H.check_sims_gone)

  it("serves /metrics over HTTP on loopback", function()
    local env = H.sim_env()
    local pid, wait_exit = H.spawn_bg({ H.kiro_rt, "serve", "--metrics-listen", "0" }, env)
    assert(H.wait_for(function() return H.status(env) ~= nil end, 5000))
    assert.are.equal(0, H.agent({ "-m", "hi" }, env).code)
    local url = H.status(env).metrics
    assert.matches("^http://127%.0%.0%.1:%d+/metrics$", url)
    local r = H.run({ "curl", "-sS", "-D", "-", url }, {})
    assert.are.equal(0, r.code, r.err)
    assert.matches("^HTTP/1%.1 200 OK\r\n", r.out)
    assert.matches("Content%-Type: text/plain; version=0%.0%.4", r.out)
    assert.matches('kiro_requests_total{backend="[^"]*",model="",mode="daemon",outcome="ok"} 1\n', r.out)
    r = H.run({ "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", (url:gsub("/metrics$", "/nope")) }, {})
    assert.are.equal("404", r.out)
    os.execute("kill -TERM " .. pid)
    assert.are.equal(0, (wait_exit()))
  end)

  it("is scraped by a real Prometheus server", function()
    local env = H.sim_env()
    local _, wait_serve = H.spawn_bg({ H.kiro_rt, "serve", "--metrics-listen", "127.0.0.1:0" }, env)
    assert(H.wait_for(function() return H.status(env) ~= nil end, 5000))
    assert.are.equal(0, H.agent({ "-m", "hi" }, env).code)
    local target = H.status(env).metrics:match("^http://([^/]+)/metrics$")
    local dir = H.tmpdir()
    H.write_file(dir .. "/prometheus.yml", ([[
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: kiro
    static_configs:
      - targets: ['%s']
]]):format(target))
    local port = H.free_port()
    local prom_pid, wait_prom = H.spawn_bg({ "prometheus", "--config.file=" .. dir .. "/prometheus.yml",
      "--storage.tsdb.path=" .. dir .. "/data", "--web.listen-address=127.0.0.1:" .. port }, {})
    local query = ("http://127.0.0.1:%d/api/v1/query?query=kiro_requests_total"):format(port)
    local found = H.wait_for(function()
      local r = H.run({ "curl", "-s", query }, {})
      return r.code == 0 and r.out:find('"__name__":"kiro_requests_total"', 1, true) ~= nil
    end, 30000)
    local r = H.run({ "curl", "-s", query }, {})
    os.execute("kill -TERM " .. prom_pid)
    wait_prom()
    H.run({ H.kiro_rt, "stop" }, env)
    wait_serve()
    assert(found, "Prometheus never had kiro_requests_total: " .. tostring(r.out))
    assert.matches('"job":"kiro"', r.out)
    assert.matches('"outcome":"ok"', r.out)
  end)

  it("backends that differ only in environment share one series each", function()
    local kiro = H.setup({}, { pool_min = 1 })
    assert(kiro.chat("a", { env = { KIRO_SPEC_SET = "1" } }))
    assert(kiro.chat("b", { env = { KIRO_SPEC_SET = "2" } }))
    assert.is_true(#kiro.stats().pools >= 2)
    local text = kiro.metrics()
    local seen = {}
    for line in text:gmatch("[^\n]+") do
      local series = line:match("^(kiro_[%w_]+%b{})")
      if series then
        assert.is_nil(seen[series], "duplicate series " .. series)
        seen[series] = true
      end
    end
    assert.is_true(sample(text, "kiro_daemons", { state = "ready" }) >= 2)
  end)
end)
