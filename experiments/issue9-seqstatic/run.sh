#!/usr/bin/env bash
# Issue 9: one profile per bucket with the sequence fixed at the bucket length, FP16 and INT8, benched beside
# torch.compile. Builds in a copy of out/bert-base-zh (issue6-bertbase's export and scales).
#   bash experiments/issue9-seqstatic/run.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"
C=$EXP/config.yaml
: "${BUILD_TIMEOUT:=200}"
copy_workdir out/bert-base-zh out/bb-seqstatic
build "$C"
build "$C" --int8 --no-fp16
BENCH_TIMEOUT=${BENCH_TIMEOUT:-160} bench "$C" --no-simulate
