#!/usr/bin/env bash
# Issue 20, item 5: the default model's INT8 engine with calibrate's new defaults (equalization, choices on held-out
# calibration texts), ONNX backend (its heads are 32 wide); verify FP16, INT8 and Q/DQ on the GPU, and bench both
# engines beside torch at the config's shapes.
#   bash experiments/issue20-e5-int8/run.sh
#   ONLY_INT8=1 bash experiments/issue20-e5-int8/run.sh    (the INT8 engine and its verify only: ~1 build, no bench)
#   PHASE=build …  then  PHASE=measure …                    (the whole run in two device calls of < 600 s each:
#                                                             both builds, then verify + bench on the same machine)
# Carried: .carry/e5 (the CPU side's work dir: export + scales + eval cache, without model.qdq.onnx, which
# `calibrate --from-scales` rebuilds here) and, for bench's torch side, .carry/e5ckpt (the checkpoint).
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"
: "${BUILD_TIMEOUT:=330}" "${BENCH_TIMEOUT:=240}"
if [ "${PHASE:-}" != measure ]; then
join_e5 || exit 1
$TRTPY -m trtbuild calibrate --config $E5_CONFIG --from-scales | tail -n 1
if [ -n "${ONLY_INT8:-}" ]; then
  build $E5_CONFIG --int8 --no-fp16
  cp "$(arch_dir "$E5")/manifest.json" "$RES/manifest.json" 2>/dev/null
  verify $E5_CONFIG int8 qdq
  exit 0
fi
fi
if [ "${PHASE:-}" != measure ]; then
  build $E5_CONFIG --int8
  cp "$(arch_dir "$E5")/manifest.json" "$RES/manifest.json" 2>/dev/null
  [ "${PHASE:-}" = build ] && exit 0
fi
bash .carry/e5ckpt/join.sh finish /tmp/e5ckpt >/dev/null && mkdir -p models && rm -rf models/zh-sentiment-e5-small \
  && cp -r /tmp/e5ckpt/zh-sentiment-e5-small models/ || exit 1
cp "$(arch_dir "$E5")/manifest.json" "$RES/manifest.json" 2>/dev/null
verify $E5_CONFIG fp16 int8 qdq
bench $E5_CONFIG --backend trt-fp16 --backend trt-int8 --backend torch-fp16 --backend torch-compile-fp16 \
  --iterations 50 --no-simulate
