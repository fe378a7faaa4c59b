-- kiro.template.render: messages to the seed's prompt form.
local template = require "kiro.template"

describe("template.render", function()
  it("renders one user turn as the seed does", function()
    assert.are.equal("User: Hello\n\nAssistant: ", template.render { { role = "user", content = "Hello" } })
  end)

  it("renders a conversation with a system prompt", function()
    local p = template.render {
      { role = "system", content = "Be brief." },
      { role = "user", content = "Hi" },
      { role = "assistant", content = "Hello!" },
      { role = "user", content = "How are you?" },
    }
    assert.are.equal("System: Be brief.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: How are you?\n\nAssistant: ", p)
  end)

  it("takes labels, a separator and no open turn", function()
    local p = template.render({ { role = "user", content = "x" } },
      { labels = { user = "Human" }, separator = "\n", reply_role = false })
    assert.are.equal("Human: x", p)
  end)

  it("rejects malformed messages", function()
    assert.has_error(function() template.render("hi") end)
    assert.has_error(function() template.render { { role = "robot", content = "x" } } end,
      'template.render: message 1 has unknown role "robot"')
    assert.has_error(function() template.render { { role = "user" } } end)
  end)

  it("is the one the kiro module exposes", function()
    local kiro = require "kiro"
    assert.are.equal(template, kiro.template)
  end)
end)

describe("named templates", function()
  after_each(H.check_leaks)

  local history = {
    { role = "user", content = "first question" }, { role = "assistant", content = "first answer" },
    { role = "user", content = "second question" }, { role = "assistant", content = "second answer" },
  }

  it("a system prompt with variables, the history trimmed by turns and by characters, labels", function()
    local before, after = template.form({ system = "You help {{user}} on {{ date }}." }, "bot", nil,
      { user = "alice", date = "2026-11-26" })
    assert.are.equal("System: You help alice on 2026-11-26.\n\nUser: ", before)
    assert.are.equal("\n\nAssistant: ", after)
    before = template.form({ system = "Today is {{date}}." }, "bot")
    assert.are.equal("System: Today is " .. os.date("%Y-%m-%d") .. ".\n\nUser: ", before)
    -- The last two turns; then what fits in 20 characters, whole messages only.
    before = template.form({ max_turns = 2 }, "bot", history)
    assert.are.equal("User: second question\n\nAssistant: second answer\n\nUser: ", before)
    before = template.form({ max_chars = 20 }, "bot", history)
    assert.are.equal("Assistant: second answer\n\nUser: ", before)
    before, after = template.form({ labels = { user = "Q", assistant = "A" }, separator = "\n" }, "qa", history)
    assert.are.equal("Q: first question\nA: first answer\nQ: second question\nA: second answer\nQ: ", before)
    assert.are.equal("\nA: ", after)
    local ok, err = template.form({ system = "For {{user}} and {{team}}" }, "bot", nil, { team = "x" })
    assert.is_nil(ok)
    assert.are.equal("template bot: no value for {{user}} (give it in opts.vars, or --var user=VALUE)", err)
  end)

  it("are configured, named by calls, and checked", function()
    local kiro = H.setup()
    kiro.configure { templates = {
      qa = { labels = { user = "Q", assistant = "A" }, separator = "\n" },
      bot = { system = "You help {{user}}.", max_turns = 8, max_chars = 24000 },
    } }
    -- kiro-sim echoes a prompt that is not in the seed's form whole.
    assert.are.equal("You said: Q: hi\nA: ", kiro.chat("hi", { template = "qa" }))
    assert.are.equal("You said: hi", kiro.chat("hi", { template = "bot", vars = { user = "bob" }, history = history }))
    assert.has_error(function() local r = kiro.chat("x", { template = "bot" }); return r end,
      "kiro.chat: template bot: no value for {{user}} (give it in opts.vars, or --var user=VALUE)")
    assert.has_error(function() local r = kiro.chat("x", { template = "nope" }); return r end,
      "kiro.chat: template must be \"default\" (the seed's prompt form) or a configured one (got \"nope\")")
    assert.has_error(function() kiro.configure { templates = { t = { max_chars = 0 } } } end,
      "kiro.configure: templates.t.max_chars must be an integer >= 1")
    assert.has_error(function() kiro.configure { templates = { default = {} } } end,
      'kiro.configure: templates: "default" cannot name a template (letters, digits, _ . -; not default)')
    kiro.configure { templates = false }
  end)
end)
