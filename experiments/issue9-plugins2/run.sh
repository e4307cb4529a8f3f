#!/usr/bin/env bash
# Issue 9 p2: TensorRT's BERT plugins, one bucket (128), the INT8 engine with the INT8 attention plugin. Builds in a
# copy of out/bb-p1 (issue9-prep9 p1).   bash experiments/issue9-plugins2/run.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"
C=$EXP/config.yaml
copy_workdir out/bb-p1 out/bb-p2
BUILD_TIMEOUT=${BUILD_TIMEOUT:-240} build "$C" --int8 --no-fp16
parity out/bb-p2 parity
BENCH_TIMEOUT=${BENCH_TIMEOUT:-150} bench "$C" --no-simulate
