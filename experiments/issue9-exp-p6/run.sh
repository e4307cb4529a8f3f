#!/usr/bin/env bash
# Issue 9 experiment p6 (config.yaml) ran as the BERT-base steps with this config, one device call each:
#   bash experiments/issue9-exp-p6/run.sh bertbase        # model, export, calibrate, eval inputs, FP16 engine
#   bash experiments/issue9-exp-p6/run.sh bertbase-int8   # INT8 engine, parity, manifest check
#   bash experiments/issue9-exp-p6/run.sh bench           # the full bench with the traffic simulation
# (each runs that step's run.sh with CONFIG= this config; the archive is named issue9-exp-p6-<stage>.tgz)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export CONFIG=experiments/$(basename "$here")/config.yaml STEP=$(basename "$here")-${1:-}
case "${1:-}" in
  bertbase|bertbase-int8) exec bash "$here/../issue6-$1/run.sh" ;;
  bench) exec bash "$here/../issue8-bench/run.sh" ;;
  *) echo "usage: $0 bertbase|bertbase-int8|bench" >&2; exit 2 ;;
esac
