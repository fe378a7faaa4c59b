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
echo "== kiro-rt agent -m \"Hello, who are you?\"   (the first call starts the server and a daemon)"
t0=$(date +%s%N)
"$BUILD/kiro-rt" agent -m "Hello, who are you?"
t1=$(date +%s%N)
echo "== the same again: the warm daemon answers"
"$BUILD/kiro-rt" agent -m "Hello, who are you?"
t2=$(date +%s%N)
echo "   first call $(( (t1 - t0) / 1000000 )) ms, second call $(( (t2 - t1) / 1000000 )) ms (kiro-sim streams a word every ${KIRO_SIM_CHUNK_DELAY_MS:-0} ms)"
echo
echo "== kiro-rt status"
"$BUILD/kiro-rt" status
echo
echo "== three calls in one Lua script (in-process): the first starts a daemon, the rest reuse it"
"$BUILD/kiro-rt" run scripts/demo.lua
echo
echo "The server keeps the daemon warm for 10 idle minutes; 'kiro-rt stop' stops it now."
