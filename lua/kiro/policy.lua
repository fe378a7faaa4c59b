--- The default fallback policy.
--
-- When a request fails, kiro asks the policy what to do next. The policy gets
-- a `failure` table and returns one of:
--
--   "oneshot"  serve this request by spawning the CLI once (SPEC 2.2)
--   "retry"    send it to the daemon pool again (another or a restarted daemon)
--   "replay"   (code session_lost, with opts.history) start the conversation
--              again under its key: the new one's first turn carries
--              opts.history and this turn, rendered with kiro.template
--   "fail"     give the error to the caller
--
-- failure fields:
--   code            error code: spawn, crashed, timeout, protocol, backend, auth, overloaded, ...
--   message         the error message
--   mode            the path that failed: "daemon" or "oneshot"
--   requested_mode  what the caller asked for: "auto", "daemon" or "oneshot"
--   attempt         1 for the first try, 2 after one fallback, ...
--   delivered       true if part of the reply already reached the caller
--   remaining_ms    time left of the call's timeout_ms
--   prompt, opts    the request itself
--
-- Whatever a policy returns, kiro never falls back or retries once part of a
-- reply has reached the caller (the caller would see text twice), and never
-- tries more than `max_attempts` times.
--
-- Replace it with kiro.configure{ policy = function(failure) ... end } or with
-- a table that has a `decide` function.

local policy = {}

--- Codes that mean "the daemon could not serve this; the CLI itself may".
policy.fallback_codes = {
  spawn = true,    -- the daemon would not start (or the CLI has no daemon mode)
  crashed = true,  -- the daemon died before any of the reply reached the caller
}

--- Falls back to the CLI itself when the daemon could not serve a request
--- made in auto mode (a code in fallback_codes) and none of its reply reached
--- the caller; fails otherwise.
---@param failure table the failed attempt (fields above)
---@return string action "oneshot" or "fail"
function policy.decide(failure)
  if failure.delivered then
    return "fail"
  end
  -- A conversation's turn cannot go to a one-off CLI run: it has no past.
  if failure.opts and failure.opts.session then return "fail" end
  if failure.mode == "daemon" and failure.requested_mode == "auto"
     and policy.fallback_codes[failure.code] then
    return "oneshot"
  end
  return "fail"
end

return policy
