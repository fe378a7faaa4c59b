-- A host with a logger of its own: kiro's log lines go to it (a request's
-- debug lines, a failed task's error), not to stderr; a logger that fails
-- costs a note on stderr; `log = false` brings stderr back. Prints one
-- JSON line: the lines the logger got, as "level target message".
local cjson = require "cjson"
local kiro = require "kiro"
local got = {}
kiro.configure { log = "debug" }
kiro.configure { log = function(level, target, message)
  got[#got + 1] = ("%s %s %s"):format(level, target, message)
end }
assert(kiro.chat("hi"))
kiro.spawn(function() error("task boom") end)
kiro.run()
kiro.configure { log = function() error("logger boom") end }
kiro.core.log("warn", "host", "lost")
kiro.configure { log = false }
kiro.configure { log = "warn" }
kiro.core.log("warn", "host", "on stderr again")
print(cjson.encode(got))
