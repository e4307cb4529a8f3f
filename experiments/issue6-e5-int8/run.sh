#!/usr/bin/env bash
# Issue 6, the default model, step 2 (a separate call after issue6-e5, ~7 min): the INT8 engine, the FP16 one
# rebuilt with step 1's timing cache, parity vs ORT FP32, the manifest check.   bash experiments/issue6-e5-int8/run.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"
BUILD_TIMEOUT=${BUILD_TIMEOUT:-280} build $E5_CONFIG --int8 --no-fp16
BUILD_TIMEOUT=${BUILD_TIMEOUT:-240} build $E5_CONFIG     # FP16 again: the timing cache of step 1 offered
parity $E5 e5-parity
cp $E5/engines/sm*/manifest.json "$RES/e5-manifest.json"
