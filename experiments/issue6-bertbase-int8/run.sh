#!/usr/bin/env bash
# Issue 6, the BERT-base shape, step 2 (a separate call after issue6-bertbase): the INT8 engine, parity, the
# manifest check.   [CONFIG=<yaml>] bash experiments/issue6-bertbase-int8/run.sh   (default configs/bert-base-zh.yaml)
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"
C=${CONFIG:-configs/bert-base-zh.yaml}
W=$(workdir_of "$C")
: "${BUILD_TIMEOUT:=480}"
build "$C" --int8 --no-fp16
parity "$W" bertbase-parity
cp "$W"/engines/sm*/manifest.json "$RES/bertbase-manifest.json"
