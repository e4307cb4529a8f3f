#!/usr/bin/env bash
# Issue 9 experiment p1 (config.yaml): build, parity, bench at the config's shapes beside torch.compile, in a
# work directory prepared by experiments/issue9-prep9 (see README.md).
#   bash experiments/issue9-exp-p1/run.sh [fp16|int8|both]      (default both)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"
exp_step "$EXP/config.yaml" "${1:-both}"
