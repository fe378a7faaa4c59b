-- Prompts of any content travel intact and cannot break framing (SPEC 6).
-- kiro-sim answers "You said: " .. prompt, so the reply carries the prompt
-- back byte for byte.
local H = require "helper"

local samples = {
  quotes = [[she said "hi" and 'bye']],
  backslashes = [[C:\path\to\file \" \\ \n (literally)]],
  newlines = "line one\nline two\r\nline three\n\n{\"prompt\": \"injected\", \"stream\": true}\n",
  nul = "before\0after\0",
  utf8 = "héllo wörld — 日本語 — emoji 😀🎉 — ∑∞ — \u{10FFFF}",
  controls = "\t\b\f\1\31 end",
  json_like = "{\"content\": \"fake\", \"done\": true}",
}

describe("prompts", function()
  after_each(H.check_leaks)

  for _, mode in ipairs { "daemon", "oneshot" } do
    for name, prompt in pairs(samples) do
      it(("reach the backend intact over %s: %s"):format(mode, name), function()
        local kiro = H.setup({}, { mode = mode == "daemon" and "auto" or "oneshot" })
        assert.are.equal("You said: " .. prompt, kiro.chat(prompt))
        local parts = {}
        for c in kiro.stream(prompt) do parts[#parts + 1] = c end
        assert.are.equal("You said: " .. prompt, table.concat(parts))
      end)
    end

    it("a 10 MB prompt travels both ways without deadlock over " .. mode, function()
      local kiro, log = H.setup({}, { mode = mode == "daemon" and "auto" or "oneshot" })
      local words = {}
      for i = 1, 1000 do words[i] = ("w%04d"):format(i) end
      local block = table.concat(words, " ") -- about 6 KB with spaces
      local prompt = block:rep(math.ceil(10 * 1024 * 1024 / #block)):sub(1, 10 * 1024 * 1024)
      local reply = kiro.chat(prompt)
      assert.are.equal(#prompt + #"You said: ", #reply)
      assert.is_true(reply == "You said: " .. prompt)
      local parts = {}
      for c in kiro.stream(prompt) do parts[#parts + 1] = c end
      assert.is_true(table.concat(parts) == "You said: " .. prompt)
      assert.is_true(#parts > 1)
      local ev = H.sim_events(log)
      assert.are.equal(2, H.count(ev, { event = "request", bytes = #prompt }))
    end)
  end

  it("a prompt that is not UTF-8 cannot go over JSON: a clear error", function()
    local kiro = H.setup()
    local r, msg, code = kiro.chat("bad \xff\xfe byte", { mode = "daemon" })
    assert.is_nil(r)
    assert.are.equal("protocol", code)
    assert.matches("not valid UTF%-8", msg)
    -- The oneshot path carries raw bytes.
    assert.are.equal("You said: bad \xff\xfe byte", kiro.chat("bad \xff\xfe byte", { mode = "oneshot" }))
  end)

  it("the CLI carries a 10 MB prompt from stdin", function()
    local prompt = ("x"):rep(10 * 1024 * 1024)
    local r = H.agent({ "--raw", "--no-stream" }, H.sim_env(), prompt)
    assert.are.equal(0, r.code)
    assert.is_true(r.out == "You said: " .. prompt .. "\n")
  end)
end)
