#!/usr/bin/env bash
# Issue 8: `trtbuild bench` on the BERT-base engines (issue6-bertbase, -bertbase-int8), every backend of the
# config, with the traffic simulation, one run.   [CONFIG=<yaml>] bash experiments/issue8-bench/run.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"
C=${CONFIG:-configs/bert-base-zh.yaml}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-540} bench "$C"
