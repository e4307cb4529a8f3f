#!/usr/bin/env bash
# Issue 9 on the default model: the INT8 engine with the attention core quantized (calibrate.quantize_attention,
# now the default) and fixed-sequence profiles, verified with its Q/DQ ONNX.   bash experiments/issue9-e5-att/run.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"
join_e5 || exit 1
$TRTPY -m trtbuild calibrate --config $E5_CONFIG --from-scales
BUILD_TIMEOUT=${BUILD_TIMEOUT:-330} build $E5_CONFIG --int8 --no-fp16
verify $E5_CONFIG int8 qdq
