#!/usr/bin/env bash
# Issue 6, the BERT-base shape, step 1: the random-weight model made, exported and calibrated (512 texts) here
# with the machine's torch, the eval inputs cached, the FP16 engine built.
#   [CONFIG=<yaml>] bash experiments/issue6-bertbase/run.sh      (default configs/bert-base-zh.yaml)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"
C=${CONFIG:-configs/bert-base-zh.yaml}
: "${BUILD_TIMEOUT:=420}"
bertbase_model
export_calibrate "$C" 512
eval_inputs "$C"       # parity's 64 eval texts
prepare_eval "$C"      # the whole eval set + its ORT FP32 baseline (bench's simulation draws lengths from it)
build "$C"
