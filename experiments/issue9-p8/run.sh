#!/usr/bin/env bash
# Issue 9 p8 (FP16, build.varlen): p6 and its variants p8a/p8b/p8c (the yaml files here), each built in a copy of
# p6's export (out/bb-p6), parity, benched at B8 S64 and B64 S128 beside torch.compile.
#   bash experiments/issue9-p8/run.sh ["p6 p8a p8b p8c"]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"
: "${BUILD_TIMEOUT:=150}" "${BENCH_TIMEOUT:=120}"
P6=experiments/issue9-exp-p6/config.yaml
bertbase_model
if [ ! -f out/bb-p6/export.json ]; then   # FP16 only: the export and the eval inputs, no calibration
  export_model $P6 && eval_inputs $P6
fi
for e in ${1:-p6 p8a p8b p8c}; do
  if [ "$e" = p6 ]; then C=$P6; else C=$EXP/$e.yaml; copy_workdir out/bb-p6 out/bb-$e; fi
  TAG=$e build "$C"
  parity out/bb-$e $e-parity
  TAG=$e bench "$C" --backend trt-fp16 --backend torch-compile-fp16 --shape 8x64 --shape 64x128 --no-simulate
done
