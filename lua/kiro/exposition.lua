--- What kiro tells Prometheus: the families it records per request (as
-- each caller saw it), and the families read from the runtime's counters and
-- pools when metrics are scraped. The registry and the text format are
-- kiro.metrics's.

local core = require "kiro.core"
local metrics = require "kiro.metrics"

local exposition = {}

local recorder

--- The per-request families, registered on first use.
---@return table recorder with first(backend, mode, seconds),
---  finished(backend, model, mode, outcome, seconds), fallback(code), permission(outcome)
function exposition.requests()
  if recorder then return recorder end
  local requests = metrics.counter("kiro_requests_total",
    "Requests by backend, model, the mode that ended them (daemon, oneshot, cache, coalesced) and outcome.",
    { "backend", "model", "mode", "outcome" })
  local duration = metrics.histogram("kiro_request_duration_seconds",
    "Time from the call to the end of its reply.", { "backend", "mode" })
  local first = metrics.histogram("kiro_first_chunk_seconds",
    "Time from the call to the first chunk handed to the caller.", { "backend", "mode" })
  local fallbacks = metrics.counter("kiro_fallbacks_total",
    "Requests served another way after a failure, by the failure's code.", { "reason" })
  local permissions = metrics.counter("kiro_permission_decisions_total",
    "ACP permission requests decided by a permission hook or a trust list, by outcome (allow, reject, option, "
      .. "cancelled, error).",
    { "outcome" })
  -- Every request passes here: the series it names are found with plain
  -- lookups (metrics.at2, at4), and made by metrics.at only the first time.
  local at, at2, at4, add, record = metrics.at, metrics.at2, metrics.at4, metrics.add, metrics.record
  recorder = {
    first = function(backend, mode, s) record(at2(first, backend, mode), s) end,
    finished = function(backend, model, mode, outcome, s)
      add(at4(requests, backend, model, mode, outcome))
      record(at2(duration, backend, mode), s)
    end,
    fallback = function(code) add(at(fallbacks, code)) end,
    permission = function(outcome) add(at(permissions, outcome)) end,
  }
  return recorder
end

local function counter(name, help, v)
  return { name = name, kind = "counter", help = help, samples = { { {}, v } } }
end

-- kiro_reloads_total, once a configuration file is in use.
local function reloads()
  local cf = package.loaded["kiro.configfile"]
  if not cf then return nil end
  return { name = "kiro_reloads_total", kind = "counter", labels = { "outcome" },
           help = "Reloads of the configuration file, by outcome (ok, error: the configuration in force stayed).",
           samples = { { { "ok" }, cf.reloads.ok }, { { "error" }, cf.reloads.error } } }
end

-- kiro_policy_errors_total, once a policy's hook failed.
local function policy_errors()
  local pol = package.loaded["kiro.policies"]
  if not pol or not next(pol.errors) then return nil end
  local samples = {}
  for key, n in pairs(pol.errors) do
    local name, hook, why = key:match("^(.-)%z(.-)%z(.*)$")
    samples[#samples + 1] = { { name, hook, why }, n }
  end
  table.sort(samples, function(a, b) return table.concat(a[1], "\0") < table.concat(b[1], "\0") end)
  return { name = "kiro_policy_errors_total", kind = "counter", labels = { "policy", "hook", "reason" },
           help = "Policy hooks that raised an error or ran past policy_timeout_ms (and were stopped), by reason.",
           samples = samples }
end

local function gauge(name, help, v)
  return { name = name, kind = "gauge", help = help, samples = { { {}, v } } }
end

--- The text exposition (format 0.0.4) of a runtime, from kiro.stats().
---@param s table kiro.stats()
---@param version string
---@return string
function exposition.render(s, version)
  exposition.requests() -- the per-request families exist, even before any request
  -- Pools whose backends differ only in arguments or environment share
  -- their labels (backend, model): their figures are summed, so that each
  -- series appears once.
  local STATES = { "ready", "busy", "draining", "stopping" }
  local groups, by_labels = {}, {}
  for _, p in ipairs(s.pools) do
    local key = p.cli .. "\0" .. (p.model or "")
    local g = by_labels[key]
    if not g then
      g = { labels = { p.cli, p.model or "" }, queued = 0, restarts = 0,
            states = { ready = 0, busy = 0, draining = 0, stopping = 0 } }
      by_labels[key] = g
      groups[#groups + 1] = g
    end
    for _, d in ipairs(p.daemons) do g.states[d.state] = (g.states[d.state] or 0) + 1 end
    g.queued, g.restarts = g.queued + p.queued, g.restarts + p.restarts
  end
  local daemons, queue, restarts = {}, {}, {}
  for i, g in ipairs(groups) do
    for _, st in ipairs(STATES) do
      daemons[#daemons + 1] = { { g.labels[1], g.labels[2], st }, g.states[st] }
    end
    queue[i] = { g.labels, g.queued }
    restarts[i] = { g.labels, g.restarts }
  end
  local c = s.cache
  local families = {
    { name = "kiro_daemons", kind = "gauge", help = "Daemons by backend, model and state.",
      labels = { "backend", "model", "state" }, samples = daemons },
    { name = "kiro_queue_depth", kind = "gauge", help = "Requests waiting for a daemon.",
      labels = { "backend", "model" }, samples = queue },
    { name = "kiro_pool_restarts_total", kind = "counter",
      help = "Daemon failures that led to a restart, by backend and model (of the pools alive now).",
      labels = { "backend", "model" }, samples = restarts },
    gauge("kiro_backends", "Backends alive (each with at most one pool of daemons).", s.backends),
    counter("kiro_daemon_starts_total", "Daemons started.", s.daemon_starts),
    counter("kiro_daemon_restarts_total", "Daemons that died after answering and were replaced.", s.daemon_restarts),
    counter("kiro_daemon_start_failures_total", "Daemons that died before answering.", s.daemon_start_failures),
    counter("kiro_timeouts_total", "Requests ended by a timeout.", s.timeouts),
    counter("kiro_cancelled_total", "Requests cancelled by their caller.", s.cancelled),
    counter("kiro_chunks_total", "Reply chunks received from backends.", s.chunks),
    counter("kiro_health_failures_total", "Daemons found stopped or zombie and replaced.", s.health_failures),
    counter("kiro_probes_total", "Active health probes sent.", s.probes),
    counter("kiro_probe_failures_total", "Active health probes that failed.", s.probe_failures),
    counter("kiro_retries_total", "Requests the policy sent to the daemon pool again.", s.retries),
    { name = "kiro_daemon_requests_total", kind = "counter",
      help = "Requests sent to daemons, by the protocol they spoke (jsonl, acp).", labels = { "protocol" },
      samples = { { { "jsonl" }, s.daemon_requests - s.acp_requests }, { { "acp" }, s.acp_requests } } },
    counter("kiro_auth_failures_total", "Requests an ACP agent refused for want of credentials.", s.auth_failures),
    counter("kiro_permission_requests_total", "Permission requests from ACP agents.", s.permission_requests),
    counter("kiro_permission_defaults_total",
      "Permission requests answered by the default (the first reject option): no hook nor trust list was set.",
      s.permission_defaults),
    counter("kiro_cache_hits_total", "Response cache hits.", c.hits),
    counter("kiro_cache_misses_total", "Response cache misses.", c.misses),
    counter("kiro_cache_evictions_total", "Response cache entries evicted (bytes bound or TTL).", c.evictions),
    counter("kiro_coalesced_total", "Requests that shared another's backend call.", c.coalesced),
    gauge("kiro_cache_bytes", "Bytes held by the response cache.", c.bytes),
    gauge("kiro_cache_entries", "Entries in the response cache.", c.entries),
    gauge("kiro_in_flight", "Requests in flight.", s.in_flight),
    gauge("kiro_conversations", "ACP conversations (opts.session) going on.", s.conversations),
    gauge("process_resident_memory_bytes", "Resident memory size in bytes.",
      core.process_rss(core.getpid()) or 0),
    { name = "kiro_build_info", kind = "gauge", help = "kiro-rt's version.", labels = { "version" },
      samples = { { { version }, 1 } } },
  }
  families[#families + 1] = reloads()
  families[#families + 1] = policy_errors()
  return metrics.render(families)
end

return exposition
