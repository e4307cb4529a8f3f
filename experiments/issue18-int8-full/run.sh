#!/usr/bin/env bash
# Issue 18: the full-INT8 variable-length recipe (NVIDIA's MLPerf v3.0 int8_builder_var_seqlen.py) on the shipped
# BERT-base config, beside the engines trtbuild builds today and the fastest torch, one run per phase on one machine.
#   PHASE=prep    bash experiments/issue18-int8-full/run.sh  random BERT-base, export, calibrate (512 texts, with
#                                                             the residual ranges), the eval set + ORT FP32 baseline,
#                                                             three work directories (one per build.int8_scope)
#   PHASE=build   …                                         FP16 (gemm dir) + INT8 engines: gemm, attention, full
#   PHASE=verify  …                                         each engine against ORT FP32 on the 1,330 eval texts
#   PHASE=bench   …                                         every engine (the other scopes' with --engine) beside
#                                                             every FP16 torch peer, with the seed-traffic simulation
# Work directories: out/bb-gemm, out/bb-attention, out/bb-full (configs written to /tmp/bb-<scope>.yaml from
# configs/bert-base-zh.yaml + calibrate.quantize_residual: true + build.int8_scope). Weights are random: accuracy is
# judged only as agreement with ORT FP32 (argmax flips), not labels.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"
: "${BUILD_TIMEOUT:=200}" "${BENCH_TIMEOUT:=540}" "${VERIFY_TIMEOUT:=150}"
SCOPES=${SCOPES:-gemm attention full}
for s in gemm attention full; do
  sed -e "s|workdir: out/bert-base-zh|workdir: out/bb-$s|" \
      -e "s|^  equalize: false.*|  equalize: false\n  quantize_residual: true|" \
      -e "s|^  varlen: true.*|  varlen: true\n  int8_scope: $s|" configs/bert-base-zh.yaml > /tmp/bb-$s.yaml
done
case "${PHASE:-}" in
  prep)
    bertbase_model
    export_calibrate /tmp/bb-gemm.yaml 512
    prepare_eval /tmp/bb-gemm.yaml
    for s in attention full; do copy_workdir out/bb-gemm out/bb-$s; done
    cp /tmp/bb-*.yaml "$RES/" ;;
  build)
    TAG=gemm build /tmp/bb-gemm.yaml --int8
    for s in $SCOPES; do [ "$s" = gemm ] || TAG=$s build /tmp/bb-$s.yaml --int8 --no-fp16; done
    for s in $SCOPES; do cp "$(arch_dir out/bb-$s)/manifest.json" "$RES/manifest-$s.json" 2>/dev/null; done ;;
  verify)
    for s in $SCOPES; do
      timeout "$VERIFY_TIMEOUT" $TRTPY -m trtbuild verify --config /tmp/bb-$s.yaml --candidate int8 \
        --reports "$RES/verify-$s" > "$RES/verify-$s.txt" 2>&1; echo "verify $s exit $?"; grep -E "^int8|^  all" "$RES/verify-$s.txt"
    done
    timeout "$VERIFY_TIMEOUT" $TRTPY -m trtbuild verify --config /tmp/bb-gemm.yaml --candidate fp16 \
      --reports "$RES/verify-fp16" > "$RES/verify-fp16.txt" 2>&1; grep -E "^fp16|^  all" "$RES/verify-fp16.txt" ;;
  bench)  # one run: both gemm-dir engines, the other scopes' INT8 engines (--engine), every FP16 torch peer
    extra=()
    for s in $SCOPES; do
      e="$(arch_dir out/bb-$s)/int8.engine"
      [ "$s" = gemm ] || [ ! -f "$e" ] || extra+=(--engine "$e")
    done
    bench /tmp/bb-gemm.yaml --backend trt-fp16 --backend trt-int8 --backend torch-fp16 \
      --backend torch-compile-fp16 --backend torch-compile-reduce-overhead-fp16 \
      --backend torch-compile-max-autotune-fp16 ${extra[@]+"${extra[@]}"} ${BENCH_ARGS:-} ;;
  *) echo "PHASE=prep|build|verify|bench" >&2; exit 2 ;;
esac
