#!/usr/bin/env bash
# Issue 17: which way of running a multi-profile ONNX-parser engine crashes TensorRT 8.6 on the H200.
# Needs /tmp/tiny-work exported and calibrated (experiments/gpu-suite does that); builds its FP16 engine
# (3 bucket profiles, batch <= 8) and runs probe.py: each way in a child process, exit codes recorded.
#   bash experiments/issue17-profiles/run.sh [ROUNDS]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"
[ -f /tmp/tiny-work/export.json ] || { echo "run experiments/gpu-suite first (it prepares /tmp/tiny-work)"; exit 1; }
build experiments/gpu-suite/config.yaml
E=$(arch_dir /tmp/tiny-work)/fp16.engine
timeout 400 $TRTPY "$EXP/probe.py" "$E" "$RES/probe.json" "${1:-5}" 2>&1 | tee "$RES/probe.log"
