#!/usr/bin/env bash
# The GPU test suite (tests/gpu) on two tiny Chinese-vocab BERTs made, exported and calibrated with the
# machine's torch: config.yaml (16-wide heads) and a copy with 64-wide heads for build.backend plugins.
# Run it alone: beside a CPU-heavy job its ONNX builds hit TensorRT 8.6's Myelin context bug.
#   bash experiments/gpu-suite/run.sh [PYTEST_K]      (PYTEST_K: pytest -k, e.g. plugins)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"
# REUSE=1: a second run in the same visit reuses the two work directories the first one made
if [ -z "${REUSE:-}" ] || [ ! -f /tmp/tiny-work/calibrate.json ] || [ ! -f /tmp/tiny64-work/calibrate.json ]; then
$TORCHPY - <<'PY'
from trtbuild.demo.random_bert import chinese_vocab_path, random_bert_checkpoint, read_vocab
vocab = read_vocab(chinese_vocab_path())
random_bert_checkpoint("/tmp/tiny-ckpt", vocab, hidden=64, heads=4, intermediate=128, max_positions=128, seed=2)
random_bert_checkpoint("/tmp/tiny64-ckpt", vocab, hidden=128, heads=2, intermediate=256, max_positions=128, seed=3)
PY
# (tiny64 is built with build.backend plugins, which needs scales without equalization)
sed -e 's#tiny-ckpt#tiny64-ckpt#; s#tiny-work#tiny64-work#; s#name: tiny#name: tiny64#' \
    -e 's#percentile: 99.999}#percentile: 99.999, equalize: false}#' "$EXP/config.yaml" > /tmp/tiny64.yaml
for c in "$EXP/config.yaml" /tmp/tiny64.yaml; do
  $TORCHPY -m trtbuild export --config "$c" --force >/dev/null && $TORCHPY -m trtbuild calibrate --config "$c" --no-eval 2>&1 | tail -n 2
done
fi
TRTBUILD_GPU_WORKDIR=/tmp/tiny-work TRTBUILD_GPU_WORKDIR64=/tmp/tiny64-work \
  $TRTPY -m pytest -m gpu tests/gpu -q -rA ${1:+-k "$1"} 2>&1 | tee "$RES/gpu-tests.log"
# the engines' manifests (which build recipe passed its self-test, per engine) come back with the log
for f in $(find /tmp/pytest-of-*/ -name manifest.json -path "*engines*" 2>/dev/null); do
  d=$(dirname "$(dirname "$(dirname "$(dirname "$f")")")")   # /tmp/pytest-of-root/pytest-N/gpuK
  cp "$f" "$RES/manifest-$(basename "$(dirname "$d")")-$(basename "$d").json"
done
