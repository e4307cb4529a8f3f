#!/usr/bin/env bash
# Issue 9: the BERT-base model, then export + calibrate (512 texts) + the eval inputs of each named experiment's
# work directory (experiments/issue9-exp-NAME/config.yaml), ready for its build and bench.
#   bash experiments/issue9-prep9/run.sh ["NAME ..."]      (default "e2b e3 e4")
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"
bertbase_model
for e in ${1:-e2b e3 e4}; do
  C=experiments/issue9-exp-$e/config.yaml
  [ -f "$C" ] || { echo "no $C"; continue; }
  export_calibrate "$C" 512
  eval_inputs "$C"
done
