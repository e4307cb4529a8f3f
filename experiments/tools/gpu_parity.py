"""Engine vs ONNX Runtime FP32 on the cached eval texts of a work directory, the manifest mismatch
check, and `inspect` of each engine. Run on the GPU machine (experiments/lib.sh: `parity WORKDIR NAME`):

    trtpy experiments/tools/gpu_parity.py WORKDIR OUT.json

The eval texts are WORKDIR/cache/eval-*.npz (trtbuild.verify.parity.save_eval_inputs, lib.sh's eval_inputs)."""

import glob
import json
import os
import shutil
import subprocess
import sys

from trtbuild.backends import inspect_artifact
from trtbuild.backends.trt import import_tensorrt
from trtbuild.backends.trt.engine import deserialize_engine
from trtbuild.backends.trt.manifest import EngineMismatchError
from trtbuild.backends.trt.runner import TrtRunner
from trtbuild.verify.parity import compare

workdir, out = sys.argv[1], sys.argv[2]
npz = sorted(glob.glob(os.path.join(workdir, "cache", "eval-*.npz")))[-1]
arch = sorted(glob.glob(os.path.join(workdir, "engines", "sm*")))[-1]
record = {"workdir": workdir, "eval_npz": os.path.basename(npz), "architecture": os.path.basename(arch),
          "manifest": json.load(open(os.path.join(arch, "manifest.json"))), "parity": {}, "inspect": {}}
for precision in ("fp16", "int8"):
    engine = os.path.join(arch, precision + ".engine")
    if os.path.isfile(engine):
        record["parity"][precision] = compare(os.path.join(workdir, "model.onnx"), engine, npz)
        record["inspect"][precision] = inspect_artifact(engine).to_dict()
        print(precision, json.dumps(record["parity"][precision]))
# a manifest that no longer matches is refused before deserialization
bad = arch + "-edited"
shutil.rmtree(bad, ignore_errors=True)
shutil.copytree(arch, bad)
manifest = json.load(open(os.path.join(bad, "manifest.json")))
manifest["engines"]["fp16.engine"]["compute_capability"] = "8.0"
json.dump(manifest, open(os.path.join(bad, "manifest.json"), "w"))
try:
    TrtRunner(os.path.join(bad, "fp16.engine")).close()
    record["mismatch_refused"] = None
except EngineMismatchError as e:
    record["mismatch_refused"] = str(e)
print("mismatch:", record["mismatch_refused"])
shutil.rmtree(bad, ignore_errors=True)
record["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
with open(out, "w") as f:
    json.dump(record, f, indent=2)
# the engine inspector's own JSON for the INT8 engine (which layers run in which precision)
try:
    engine_path = os.path.join(arch, "int8.engine")
    if os.path.isfile(engine_path):
        trt = import_tensorrt()  # (with TensorRT's plugins registered: build.backend plugins engines need them)
        runtime, engine = deserialize_engine(trt, engine_path)
        text = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
        with open(out.replace(".json", "-int8-layers.json"), "w") as f:
            f.write(text)
except Exception as e:  # diagnostics only
    print("inspector:", e)
