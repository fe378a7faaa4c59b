-- `luarocks make` builds kiro-rt from this checkout (CMake) and installs the
-- Lua module (kiro.so and lua/kiro) into the tree, with kiro-rt and
-- kiro-sim as its commands; `luarocks test` runs the suite (busted, through
-- CTest). Build dependencies as scripts/deps.sh installs them on Debian.
rockspec_format = "3.0"
package = "kiro-rt"
version = "scm-1"
source = {
  url = "git+https://github.com/kiro-rt/kiro-rt.git",
}
description = {
  summary = "Drive LLM command-line backends from Lua: warm pools, streaming, recovery",
  detailed = [[
    A C core on libuv keeps LLM CLI backends (kiro-cli, gemini, copilot, ...)
    running and talks JSON Lines or the Agent Client Protocol to them;
    coroutine-friendly kiro.chat and kiro.stream for Lua 5.4 scripts and
    hosts (luv, cqueues), with fallback policy, a response cache, metrics and
    a local server that keeps backends warm between CLI calls.
  ]],
  homepage = "https://github.com/kiro-rt/kiro-rt",
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
external_dependencies = {
  LIBUV = { header = "uv.h" },
  JANSSON = { header = "jansson.h" },
  YAJL = { header = "yajl/yajl_parse.h" },
}
build = {
  type = "cmake",
  variables = {
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    CMAKE_BUILD_TYPE = "Release",
    KIRO_BUILD_TESTS = "OFF",
    KIRO_INSTALL_CORE = "OFF",
    KIRO_INSTALL_LMOD = "$(LUADIR)",
    KIRO_INSTALL_CMOD = "$(LIBDIR)",
  },
}
test = {
  type = "command",
  command = "make test",
}
