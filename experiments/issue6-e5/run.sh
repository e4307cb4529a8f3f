#!/usr/bin/env bash
# Issue 6, the default model, step 1: its export + scales (made on the CPU machine, carried in .carry/e5),
# the Q/DQ ONNX rebuilt here, the FP16 engine built cold.   bash experiments/issue6-e5/run.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"
: "${BUILD_TIMEOUT:=400}"
join_e5 || exit 1
$TRTPY -m trtbuild calibrate --config $E5_CONFIG --from-scales
build $E5_CONFIG
