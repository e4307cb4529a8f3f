#!/usr/bin/env bash
# Issue 7 on the default model: both engines built side by side (their build times are not comparable), then
# `trtbuild verify` of the FP16 and INT8 engines and the Q/DQ ONNX.   bash experiments/issue7-e5-both/run.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"
: "${BUILD_TIMEOUT:=420}"
join_e5 || exit 1
$TRTPY -m trtbuild calibrate --config $E5_CONFIG --from-scales
build $E5_CONFIG &
build $E5_CONFIG --int8 --no-fp16 &
wait
verify $E5_CONFIG fp16 int8 qdq
