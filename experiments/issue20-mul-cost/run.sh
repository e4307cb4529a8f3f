#!/usr/bin/env bash
# Issue 20, item 5: do the equalization's per-channel Muls make the INT8 engine slower? Two INT8 engines of the
# default model with one profile (sequence 128, batch 1-64) from the same export: `eq` with calibrate's default
# scales (SmoothQuant factors: 48 Mul(1/s) on the GEMM branches + folds into V), `noeq` from scales made with
# `--no-equalize --no-fallback` (same 98 Q/DQ placements, no Mul); bench both (and an FP16 engine, if time is left)
# at B1/B8/B64 x S128. With .carry/noatt also `noatt`: the default equalized scales of a calibration with
# calibrate.quantize_attention false (74 Q/DQ nodes, the attention core in FP16): is INT8 attention the cost?
#   bash experiments/issue20-mul-cost/run.sh
# Carried: .carry/e5 (the default work directory, as for issue20-e5-int8) and .carry/noeq (scales.json + the records
# of `calibrate --config experiments/issue20-mul-cost/noeq.yaml --no-equalize --no-fallback --no-eval`, made on the
# CPU from the same model.onnx; model.qdq.onnx is rebuilt here with --from-scales).
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"
: "${BUILD_TIMEOUT:=120}" "${BENCH_TIMEOUT:=150}"
mkdir -p out; [ -d /tmp/e5/zh-sentiment-e5-small ] || bash .carry/e5/join.sh finish /tmp/e5 >/dev/null || exit 1
VARIANTS="noeq eq"
[ -d .carry/noatt ] && VARIANTS="noeq eq noatt"
for v in $VARIANTS; do
  rm -rf out/e5-s128-$v && cp -r /tmp/e5/zh-sentiment-e5-small out/e5-s128-$v || exit 1
done
cp .carry/noeq/* out/e5-s128-noeq/ || exit 1
[ -d .carry/noatt ] && { cp .carry/noatt/* out/e5-s128-noatt/ || exit 1; }
for v in $VARIANTS; do
  $TRTPY -m trtbuild calibrate --config $EXP/$v.yaml --from-scales | tail -n 1
  $TRTPY -c "import onnx,sys; m=onnx.load(sys.argv[1], load_external_data=False); print(sys.argv[2], 'Mul nodes', sum(n.op_type=='Mul' for n in m.graph.node), 'Q nodes', sum(n.op_type=='QuantizeLinear' for n in m.graph.node))" out/e5-s128-$v/model.qdq.onnx $v | tee -a "$RES/nodes.txt"
done
for v in noeq eq; do TAG=$v build $EXP/$v.yaml --int8 --no-fp16; done
TAG=fp16 build $EXP/eq.yaml
[ -d .carry/noatt ] && TAG=noatt build $EXP/noatt.yaml --int8 --no-fp16
# one bench run: the eq directory's engines, the other variants' INT8 engines beside them (bench --engine)
extra=()
for v in noeq noatt; do
  e="$(arch_dir out/e5-s128-$v)/int8.engine"
  [ -f "$e" ] && extra+=(--engine "$e")
done
bench $EXP/eq.yaml --backend trt-fp16 --backend trt-int8 ${extra[@]+"${extra[@]}"} --shape 1x128 --shape 8x128 \
  --shape 64x128 --iterations 100 --no-simulate
