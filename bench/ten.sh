#!/bin/sh
# The seed's concurrency test: ten agents at once ("Test 1" .. "Test 10").
KIRO_RT=${KIRO_RT:-build/kiro-rt}
i=1
while [ $i -le 10 ]; do
  "$KIRO_RT" agent -m "Test $i" >/dev/null &
  i=$((i + 1))
done
wait
