#!/usr/bin/env bash
# Issue 9 p3: p2 plus a static (64, 128) profile beside the dynamic one, FP16 + INT8, bench and a per-layer profile
# of both engines at B64 S128. Builds in a copy of out/bb-p1 (issue9-prep9 p1).   bash experiments/issue9-plugins3/run.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"
C=$EXP/config.yaml
copy_workdir out/bb-p1 out/bb-p3
BUILD_TIMEOUT=${BUILD_TIMEOUT:-240} build "$C" --int8
BENCH_TIMEOUT=${BENCH_TIMEOUT:-100} bench "$C" --no-simulate
E=$(arch_dir out/bb-p3)
layer_profile layer-profile 64 128 "$E/fp16.engine" "$E/int8.engine"
