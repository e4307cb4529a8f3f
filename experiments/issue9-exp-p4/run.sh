#!/usr/bin/env bash
# Issue 9 experiment p4 (config.yaml) ran as the BERT-base steps with this config, one device call each:
#   bash experiments/issue9-exp-p4/run.sh bertbase        # model, export, calibrate, eval inputs, FP16 engine
#   bash experiments/issue9-exp-p4/run.sh bertbase-int8   # INT8 engine, parity, manifest check
#   bash experiments/issue9-exp-p4/run.sh bench           # the full bench with the traffic simulation
#   bash experiments/issue9-exp-p4/run.sh layer-profile   # per-layer GPU time of both engines at B64 S128
# (the first three run that step's run.sh with CONFIG= this config; archives are named issue9-exp-p4-<stage>.tgz)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export CONFIG=experiments/$(basename "$here")/config.yaml STEP=$(basename "$here")-${1:-}
case "${1:-}" in
  bertbase|bertbase-int8) exec bash "$here/../issue6-$1/run.sh" ;;
  bench) exec bash "$here/../issue8-bench/run.sh" ;;
  layer-profile) ;;
  *) echo "usage: $0 bertbase|bertbase-int8|bench|layer-profile" >&2; exit 2 ;;
esac
source "$here/../lib.sh" "$@"
E=$(arch_dir out/bb-p4)
layer_profile layer-profile 64 128 "$E/fp16.engine" "$E/int8.engine"
