--- Prometheus metrics: a small registry (counters and histograms with
-- labels) and the text exposition format (version 0.0.4).

local metrics = {}

metrics.BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300 }

local families = {}   -- name -> family
local order = {}      -- names in registration order

local function family(name, kind, help, labels)
  local f = families[name]
  if f then return f end
  f = { name = name, kind = kind, help = help, labels = labels or {}, series = {}, keys = {} }
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

local function series(f, values)
  local key = table.concat(values, "\0")
  local s = f.series[key]
  if not s then
    s = { labels = label_text(f.labels, values), value = 0 }
    if f.kind == "histogram" then
      s.counts = {}
      for i = 1, #metrics.BUCKETS do s.counts[i] = 0 end
      s.sum, s.count = 0, 0
    end
    f.series[key] = s
    f.keys[#f.keys + 1] = key
  end
  return s
end

function metrics.counter(name, help, labels) return family(name, "counter", help, labels) end
function metrics.histogram(name, help, labels) return family(name, "histogram", help, labels) end

function metrics.inc(f, values, by)
  local s = series(f, values or {})
  s.value = s.value + (by or 1)
end

function metrics.observe(f, values, v)
  local s = series(f, values or {})
  for i, le in ipairs(metrics.BUCKETS) do
    if v <= le then s.counts[i] = s.counts[i] + 1 end
  end
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
-- ({ name=, kind="gauge"|"counter", help=, labels={...}, samples={ {values, v}, ... } }).
function metrics.render(extra)
  local out = {}
  local function emit(s) out[#out + 1] = s end
  for _, name in ipairs(order) do
    local f = families[name]
    emit(("# HELP %s %s"):format(name, f.help))
    emit(("# TYPE %s %s"):format(name, f.kind))
    for _, key in ipairs(f.keys) do
      local s = f.series[key]
      if f.kind == "histogram" then
        for i, le in ipairs(metrics.BUCKETS) do
          emit(("%s_bucket%s %d"):format(name, with(s.labels, ('le="%s"'):format(num(le))), s.counts[i]))
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
