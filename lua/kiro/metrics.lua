--- Prometheus metrics: a small registry (counters and histograms with
-- labels) and the text exposition format (version 0.0.4).

local metrics = {}

metrics.BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300 }

local families = {}   -- name -> family
local order = {}      -- names in registration order

local function family(name, kind, help, labels)
  local f = families[name]
  if f then return f end
  f = { name = name, kind = kind, help = help, labels = labels or {}, index = {}, list = {} }
  families[name] = f
  order[#order + 1] = name
  return f
end

local function escape(v)
  return (tostring(v):gsub("[\\\"\n]", { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

local function label_text(names, values)
  if #names == 0 then return "" end
  local parts = {}
  for i, n in ipairs(names) do parts[i] = ('%s="%s"'):format(n, escape(values[i] or "")) end
  return table.concat(parts, ",")
end

--- The series of family f for these label values (made on first use).
--- Found through one table per label (no key string is built), so a
--- request's observations cost a few lookups.
---@param f table a family
---@param ... string the label values, in the family's order
---@return table series
function metrics.at(f, ...)
  local node, n = f.index, select("#", ...)
  for i = 1, n - 1 do
    local v = select(i, ...)
    local nxt = node[v]
    if not nxt then nxt = {}; node[v] = nxt end
    node = nxt
  end
  local last = n > 0 and select(n, ...) or true
  local s = node[last]
  if not s then
    s = { labels = label_text(f.labels, { ... }), value = 0 }
    if f.kind == "histogram" then
      s.counts = {} -- per bucket, not cumulative; the last is +Inf
      for i = 1, #metrics.BUCKETS + 1 do s.counts[i] = 0 end
      s.sum, s.count = 0, 0
    end
    node[last] = s
    f.list[#f.list + 1] = s
  end
  return s
end

--- The series of family f for these label values, or nil when none has
--- been made (a reader's lookup: it makes none).
---@param f table a family
---@param ... string the label values, in the family's order
---@return table|nil series
function metrics.find(f, ...)
  local node, n = f.index, select("#", ...)
  for i = 1, n - 1 do
    node = node[(select(i, ...))]
    if not node then return nil end
  end
  return node[n > 0 and select(n, ...) or true]
end

--- metrics.at for two label values, with no vararg: plain lookups once
--- the series exists (per-request paths use it).
---@param f table a family with two labels
---@param a string
---@param b string
---@return table series
function metrics.at2(f, a, b)
  local n = f.index[a]
  return n and n[b] or metrics.at(f, a, b)
end

--- metrics.at for four label values, with no vararg (see metrics.at2).
---@param f table a family with four labels
---@param a string
---@param b string
---@param c string
---@param d string
---@return table series
function metrics.at4(f, a, b, c, d)
  local n = f.index[a]
  n = n and n[b]
  n = n and n[c]
  return n and n[d] or metrics.at(f, a, b, c, d)
end

--- The counter family `name`, registered on its first call (later calls return it as registered).
---@param name string
---@param help string its # HELP text
---@param labels? string[] its label names
---@return table family
function metrics.counter(name, help, labels) return family(name, "counter", help, labels) end
--- The histogram family `name` (buckets: metrics.BUCKETS), registered on its first call.
---@param name string
---@param help string its # HELP text
---@param labels? string[] its label names
---@return table family
function metrics.histogram(name, help, labels) return family(name, "histogram", help, labels) end

--- Adds `by` (default 1) to a counter series.
---@param s table a counter's series (metrics.at)
---@param by? number
function metrics.add(s, by)
  s.value = s.value + (by or 1)
end

local BUCKETS = metrics.BUCKETS
--- Records v in a histogram series (usually a few comparisons: most observations fall in the first buckets).
---@param s table a histogram's series (metrics.at)
---@param v number the observation
function metrics.record(s, v)
  local i = 1
  while BUCKETS[i] and v > BUCKETS[i] do i = i + 1 end
  local counts = s.counts
  counts[i] = counts[i] + 1
  s.sum, s.count = s.sum + v, s.count + 1
end

local function num(v)
  if v == math.huge then return "+Inf" end
  if math.type(v) == "integer" then return tostring(v) end
  return ("%.15g"):format(v)
end

local function with(labels, extra)
  if labels == "" then return "{" .. extra .. "}" end
  return "{" .. labels .. "," .. extra .. "}"
end

local function braces(labels) return labels == "" and "" or "{" .. labels .. "}" end

--- Renders the registry, then `extra` families computed at scrape time
--- ({ name=, kind="gauge"|"counter", help=, labels={...}, samples={ {values, v}, ... } }).
---@param extra? table[] families read at scrape time
---@return string text the exposition, ending in a newline
function metrics.render(extra)
  local out = {}
  local function emit(s) out[#out + 1] = s end
  for _, name in ipairs(order) do
    local f = families[name]
    emit(("# HELP %s %s"):format(name, f.help))
    emit(("# TYPE %s %s"):format(name, f.kind))
    for _, s in ipairs(f.list) do
      if f.kind == "histogram" then
        local cumulative = 0
        for i, le in ipairs(metrics.BUCKETS) do
          cumulative = cumulative + s.counts[i]
          emit(("%s_bucket%s %d"):format(name, with(s.labels, ('le="%s"'):format(num(le))), cumulative))
        end
        emit(("%s_bucket%s %d"):format(name, with(s.labels, 'le="+Inf"'), s.count))
        emit(("%s_sum%s %s"):format(name, braces(s.labels), num(s.sum)))
        emit(("%s_count%s %d"):format(name, braces(s.labels), s.count))
      else
        emit(("%s%s %s"):format(name, braces(s.labels), num(s.value)))
      end
    end
  end
  for _, f in ipairs(extra or {}) do
    emit(("# HELP %s %s"):format(f.name, f.help))
    emit(("# TYPE %s %s"):format(f.name, f.kind))
    for _, sample in ipairs(f.samples) do
      emit(("%s%s %s"):format(f.name, braces(label_text(f.labels or {}, sample[1])), num(sample[2])))
    end
  end
  emit("")
  return table.concat(out, "\n")
end

return metrics
