--- Where the kiro-rt server lives: socket, lock and log paths, and the
-- constants client and server share.

local core = require "kiro.core"

local M = {}

M.PROTO = core.PROTO       -- wire protocol version (the handshake carries it)
M.STOP_GRACE_MS = 10000    -- in-flight requests get this long on `stop`

--- Where the socket, lock and log live.
---@return table paths dir, socket, lock, bot_socket, logdir, log, history
function M.paths()
  local dir, socket = core.server_paths() -- as kiro-rt agent's C fast path finds them
  local state = os.getenv("XDG_STATE_HOME")
  local home = os.getenv("HOME")
  local logdir
  if state and state ~= "" then
    logdir = state .. "/kiro-rt"
  elseif home and home ~= "" then
    logdir = home .. "/.local/state/kiro-rt"
  else
    logdir = dir
  end
  return {
    dir = dir,
    socket = socket,
    lock = dir .. "/server.lock",
    bot_socket = dir .. "/bot.sock", -- where `kiro-rt bot status` asks
    logdir = logdir,
    log = logdir .. "/server.log",
    history = logdir .. "/console_history", -- the console's lines, for its arrow keys
  }
end

--- Creates the log directory and its parents (0700 where created).
---@param p table the paths, as paths() gives them
---@return boolean|nil ok
---@return string? message
function M.ensure_logdir(p)
  local path = ""
  for part in p.logdir:gmatch("[^/]+") do
    path = path .. "/" .. part
    local ok, err = core.mkdir(path)
    if not ok then return nil, err end
  end
  return true
end

return M
