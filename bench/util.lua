-- Helpers the bench scripts share. A script loads it from its own folder,
-- so it runs the same under `lua5.4 bench/X.lua` and `kiro-rt run bench/X.lua`:
--   local here = arg[0]:match("^(.*)/[^/]*$") or "."
--   local util = dofile(here .. "/util.lua")

local util = {}

-- s as one word for sh(1), in single quotes.
function util.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Runs cmd with sh(1); raises if it fails.
function util.sh(cmd) assert(os.execute(cmd), "command failed: " .. cmd) end

-- A line on stderr, so that stdout holds only the figures.
function util.progress(msg) io.stderr:write("bench: ", msg, "\n") end

-- The contents of path, or nil when it cannot be opened.
function util.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function util.write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- The median of a list of numbers (sorts it in place).
function util.median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) // 2] or (t[n // 2] + t[n // 2 + 1]) / 2
end

-- A new private directory under /tmp for one run's files.
function util.tmpdir()
  local p = assert(io.popen("mktemp -d /tmp/kiro-bench.XXXXXX"))
  local dir = p:read("l")
  p:close()
  return dir
end

return util
