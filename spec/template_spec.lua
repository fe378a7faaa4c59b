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
