-- Every function the Lua face defines on a module or a class carries
-- LuaCATS annotations: a `---` doc block right above it naming each of its
-- parameters with `---@param`. Run by the suite (ctest lua_annotations).
-- Usage: lua5.4 scripts/check_annotations.lua lua/kiro/*.lua
local missing = 0
for i = 1, #arg do
  local path = arg[i]
  local lines = {}
  for l in io.lines(path) do lines[#lines + 1] = l end
  for n, l in ipairs(lines) do
    local name, params = l:match("^function%s+([%w_]+[.:][%w_.:]+)%s*%(([^)]*)%)")
    if name then
      local doc, j = {}, n - 1
      while j > 0 and lines[j]:match("^%-%-%-") do
        table.insert(doc, 1, lines[j])
        j = j - 1
      end
      local text = table.concat(doc, "\n") .. "\n"
      local problems = {}
      if #doc == 0 then problems[#problems + 1] = "no --- doc block" end
      for p in params:gmatch("[%w_]+") do
        if not text:find("@param%s+" .. p .. "%??%s") then problems[#problems + 1] = "no @param " .. p end
      end
      if params:find("...", 1, true) and not text:find("@param%s+%.%.%.") then
        problems[#problems + 1] = "no @param ..."
      end
      if #problems > 0 then
        missing = missing + 1
        io.stderr:write(("%s:%d: %s: %s\n"):format(path, n, name, table.concat(problems, ", ")))
      end
    end
  end
end
if missing > 0 then
  io.stderr:write(("%d function(s) without LuaCATS annotations\n"):format(missing))
  os.exit(1)
end
