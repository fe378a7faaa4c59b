-- kiro.http: HTTP on kiro's own loop (libcurl's multi-socket interface in
-- the C core), against a real HTTP/1.1 server (Python's, spec/hosts/http_fake.py).
local H = require "helper"
local cjson = require "cjson"

-- The fake server, started for the test: its base URL.
local function fake(tls)
  return (tls and "https" or "http") .. "://127.0.0.1:" .. H.fake_host("http_fake", nil, tls)
end

describe("kiro.http", function()
  after_each(H.check_leaks)

  it("makes requests: method, headers, body, status; the response's headers by lower-case name", function()
    local kiro = H.setup()
    local base = fake()
    local r = assert(kiro.http.request { url = base .. "/echo?x=1", method = "POST",
      headers = { ["Content-Type"] = "application/json", ["X-Token"] = "t" }, body = '{"a":1}' })
    assert.are.equal(200, r.status)
    assert.are.equal("yes", r.headers["x-fake"])
    local got = cjson.decode(r.body)
    assert.are.same({ "POST", "/echo?x=1", "application/json", "t", '{"a":1}' },
      { got.method, got.path, got.headers["content-type"], got.headers["x-token"], got.body })
    assert.matches("^kiro%-rt/", got.headers["user-agent"])
    r = assert(kiro.http.request { url = base .. "/echo", method = "PATCH", body = "" })
    assert.are.equal("PATCH", cjson.decode(r.body).method)
    r = assert(kiro.http.request { url = base .. "/status/404" })
    assert.are.same({ 404, "" }, { r.status, r.body })
    r = assert(kiro.http.request { url = base .. "/big?bytes=10", method = "HEAD" })
    assert.are.same({ 200, "10", "" }, { r.status, r.headers["content-length"], r.body })
  end)

  it("runs requests at once on one loop, and reuses connections", function()
    local kiro = H.setup()
    local base = fake()
    local done = 0
    for i = 1, 10 do
      kiro.spawn(function()
        local r = assert(kiro.http.request { url = base .. "/slow?ms=300&i=" .. i })
        assert.are.equal(300, cjson.decode(r.body).slept)
        done = done + 1
      end)
    end
    assert.are.equal(0, kiro.run())
    assert.are.equal(10, done)
    local stats = cjson.decode(assert(kiro.http.request { url = base .. "/stats" }).body)
    assert.is_true(stats.max_in_flight >= 10, stats.max_in_flight .. " at once") -- not one after another
    -- One after another: one connection serves them all.
    local before = stats.connections
    for _ = 1, 10 do assert(kiro.http.request { url = base .. "/stats" }) end
    stats = cjson.decode(assert(kiro.http.request { url = base .. "/stats" }).body)
    assert.are.equal(before, stats.connections)
  end)

  it("hands the body over as it arrives (a long poll), while other tasks go on", function()
    local kiro = H.setup()
    local base = fake()
    local got, chat = {}, nil
    kiro.spawn(function()
      local r = assert(kiro.http.request { url = base .. "/held", on_data = function(chunk)
        got[#got + 1] = chunk
        -- The server holds the rest until it is released: only a body
        -- handed over as it arrives gets here.
        if #got == 1 then
          chat = kiro.chat("meanwhile") -- kiro goes on while the request waits
          assert(kiro.http.request { url = base .. "/release" })
        end
      end })
      assert.are.same({ 200, nil }, { r.status, r.body })
    end)
    assert.are.equal(0, kiro.run())
    assert.are.equal("first\nsecond\n", table.concat(got))
    assert.are.equal("You said: meanwhile", chat)
  end)

  it("fails clearly: timeout, too big, a refused connection, an unverified certificate; misuse raises", function()
    local kiro = H.setup()
    local base = fake()
    local r, msg, code = kiro.http.request { url = base .. "/slow?ms=3000", timeout_ms = 200 }
    assert.are.same({ nil, "timeout" }, { r, code })
    assert.matches("timed out", msg)
    r, msg, code = kiro.http.request { url = base .. "/big?bytes=100000", max_bytes = 1000 }
    assert.are.same({ nil, "too_big", "the response is larger than max_bytes" }, { r, code, msg })
    -- A port nobody listens on; the secret (here the host) never shows.
    r, msg, code = kiro.http.request { url = "http://127.0.0.1:1/x", secrets = { "127.0.0.1" } }
    assert.are.same({ nil, "network" }, { r, code })
    assert.is_nil(msg:find("127.0.0.1", 1, true), msg)
    local tls = fake(true)
    r, msg, code = kiro.http.request { url = tls .. "/echo" }
    assert.are.same({ nil, "tls" }, { r, code }, msg)
    for _, bad in ipairs {
      { { url = "ftp://x/y" }, "url must be an http:// or https:// URL" },
      { { url = base, method = "BREW" }, "method must be one of" },
      { { url = base, headers = { ["Bad Name"] = "x" } }, "is not a header name" },
      { { url = base, headers = { X = "a\r\nInjected: 1" } }, "a value is one line" },
      { { url = base, timeout_ms = 0 }, "timeout_ms must be an integer >= 1" },
    } do
      local ok, err = pcall(kiro.http.request, bad[1])
      assert.is_false(ok)
      assert.matches(bad[2], err, 1, true)
    end
  end)

  it("a napper's stop ends a request under way (cancelled) and the others go on; after it none starts", function()
    local kiro = H.setup()
    local base = fake()
    local n = kiro.napper()
    local result, other
    kiro.spawn(function() result = { kiro.http.request { url = base .. "/slow?ms=5000", stop = n } } end)
    kiro.spawn(function() other = kiro.http.request { url = base .. "/slow?ms=300" } end)
    kiro.spawn(function() n:stop() end) -- (the two requests are under way: their tasks wait on them)
    assert.are.equal(0, kiro.run())
    assert.are.same({ nil, "stopped", "cancelled" }, result)
    assert.are.equal(200, other.status)
    assert.are.same({ nil, "stopped", "cancelled" }, { kiro.http.request { url = base .. "/echo", stop = n } })
    local ok, err = pcall(kiro.http.request, { url = base, stop = {} })
    assert.is_false(ok)
    assert.matches("stop must be a kiro.napper()", err, 1, true)
  end)

  it("kiro.reset ends a request under way (cancelled) and drops the connections", function()
    local kiro = H.setup()
    local base = fake()
    local result
    kiro.spawn(function() result = { kiro.http.request { url = base .. "/slow?ms=5000" } } end)
    kiro.spawn(function()
      kiro.sleep(100)
      kiro.reset()
    end)
    assert.are.equal(0, kiro.run())
    assert.are.same({ nil, "runtime shutting down", "cancelled" }, result)
    assert(kiro.http.request { url = base .. "/stats" }) -- and works again
  end)
end)
