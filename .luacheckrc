-- luacheck for the whole tree (run by the test suite: `ctest -R luacheck`).
std = "lua54"
max_line_length = 120
codes = true

files["spec/"] = {
  std = "+busted",
  globals = { "H" }, -- helper.lua sets it for every spec
  ignore = { "512" }, -- `for _ in kiro.stream(...) do break end`: leaving a stream early is tested
}
files["spec/helper.lua"] = { globals = { "H" } }
-- bench/ scripts run under kiro-rt or lua5.4 with `arg`.
files["bench/"] = { read_globals = { "arg" } }
-- Prosody modules: Prosody gives each its `module` object.
files["plugins/prosody/"] = { globals = { "module" } }
