#!/usr/bin/env bash
# Issue 9: the best ONNX-path FP16 engine (e3) and INT8 engine (e4) benched in one run beside torch. Copies e3's
# fp16.engine and its manifest entry into out/bb-e4's engines (after issue9-exp-e3 and -e4).
#   bash experiments/issue9-same-run/run.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"
A=$(arch_dir out/bb-e4); B=$(arch_dir out/bb-e3)
cp "$B/fp16.engine" "$A/"
$TRTPY -c "
import json, sys
a, b = sys.argv[1:]
m = json.load(open(a))
m['engines']['fp16.engine'] = json.load(open(b))['engines']['fp16.engine']
json.dump(m, open(a, 'w'), indent=2)" "$A/manifest.json" "$B/manifest.json"
BENCH_TIMEOUT=${BENCH_TIMEOUT:-200} bench experiments/issue9-exp-e4/config.yaml --backend trt-fp16 --backend trt-int8 \
  --backend torch-fp16 --backend torch-compile-fp16 --no-simulate
