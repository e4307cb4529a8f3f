#!/usr/bin/env bash
# Issue 9: the BERT-base FP16 engine with one static 64 x 128 profile, benched beside torch.compile. Builds in a
# copy of out/bert-base-zh (issue6-bertbase's export).   bash experiments/issue9-static/run.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"
C=$EXP/config.yaml
copy_workdir out/bert-base-zh out/bb-static
BUILD_TIMEOUT=${BUILD_TIMEOUT:-300} build "$C"
BENCH_TIMEOUT=${BENCH_TIMEOUT:-240} bench "$C" --no-simulate
