#!/bin/sh
# The main job: one prompt through kiro-rt, streamed, on the real kiro-cli if
# it is installed, else on kiro-sim (the reference backend).
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
[ -x "$BUILD/kiro-rt" ] || { echo "demo: build first (make)" >&2; exit 2; }

if [ -n "${KIRO_CLI_PATH:-}" ]; then
  backend=$KIRO_CLI_PATH
elif command -v kiro-cli >/dev/null 2>&1; then
  backend=$(command -v kiro-cli)
else
  backend=$PWD/$BUILD/kiro-sim
  # Make the simulated backend feel like a real one: a CLI start costs
  # 150 ms, and replies stream word by word.
  export KIRO_SIM_STARTUP_MS=${KIRO_SIM_STARTUP_MS:-150}
  export KIRO_SIM_CHUNK_DELAY_MS=${KIRO_SIM_CHUNK_DELAY_MS:-40}
fi
export KIRO_CLI_PATH=$backend
echo "== backend: $backend"
echo "== kiro-rt agent -m \"Hello, who are you?\"   (streamed; provider log on)"
KIRO_LOG=${KIRO_LOG:-kiro.provider=debug} "$BUILD/kiro-rt" agent -m "Hello, who are you?"
echo
echo "== three calls in one Lua script: the first starts the daemon, the rest reuse it"
"$BUILD/kiro-rt" run scripts/demo.lua
