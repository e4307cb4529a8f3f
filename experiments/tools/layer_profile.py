"""Per-layer GPU time of trtbuild engines at one shape (TensorRT's IProfiler), with the kernel (tactic) each layer
runs, grouped by kind: where the time of an engine goes. Run on the GPU machine:

    trtpy experiments/tools/layer_profile.py OUT.json BATCH SEQ ENGINE [ENGINE ...]

(experiments/lib.sh: `layer_profile NAME BATCH SEQ ENGINE...`)
"""

import json
import subprocess
import sys

from trtbuild.backends.trt.timer import TrtTimer
from trtbuild.bench.timing import sample_inputs


def kind_of(name, tactic):
    n, t = name.lower(), (tactic or "").lower()
    if "attention" in n and "_out" not in n and "_ln" not in n:
        return "attention plugin"
    if n.endswith("_ln") or "layernorm" in n:
        return "skip-layernorm plugin"
    if "gemm" in t or "conv" in t or "fprop" in t:
        prec = "int8" if ("i8i8" in t or "i8f16" in t or "imma" in t) else "fp16"
        return "gemm {} ({})".format(prec, "sm90 kernel" if t.startswith("sm90") else "sm80 kernel"
                                     if t.startswith("sm80") else "other kernel")
    if "myelin" in n or "{foreignnode}" in n:
        return "myelin"
    if "reformat" in n:
        return "reformat"
    return "other"


def profile(path, batch, seq, runs=50):
    timer = TrtTimer(path)
    trt = timer.session.trt
    info = json.loads(timer.engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    tactics = {l.get("Name"): l.get("TacticName", "") for l in info.get("Layers", []) if isinstance(l, dict)}

    class Profiler(trt.IProfiler):
        def __init__(self):
            trt.IProfiler.__init__(self)
            self.ms = {}

        def report_layer_time(self, name, ms):
            self.ms[name] = self.ms.get(name, 0.0) + ms

    timer.prepare(sample_inputs(timer.inputs, batch, seq, 21128))
    for _ in range(10):
        timer.device()
    prof = Profiler()
    timer.context.profiler = prof
    for _ in range(runs):
        timer.device()
    layers = sorted(({"layer": k, "ms": v / runs, "tactic": tactics.get(k, ""), "kind": kind_of(k, tactics.get(k))}
                     for k, v in prof.ms.items()), key=lambda r: -r["ms"])
    kinds = {}
    for r in layers:
        kinds[r["kind"]] = kinds.get(r["kind"], 0.0) + r["ms"]
    timer.close()
    return {"engine": path, "backend": timer.entry.get("backend", "onnx"), "precision": timer.entry.get("precision"),
            "batch": batch, "seq": seq, "runs": runs, "total_ms": sum(kinds.values()),
            "ms_by_kind": dict(sorted(kinds.items(), key=lambda kv: -kv[1])), "layers": layers[:40]}


if __name__ == "__main__":
    out, batch, seq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = None
    record = {"note": "IProfiler times (the engine runs layer by layer with a sync after each, so the total is above "
                      "the bench's device time); kinds from layer names and kernel names",
              "commit": commit,
              "profiles": [profile(p, batch, seq) for p in sys.argv[4:]]}
    with open(out, "w") as f:
        json.dump(record, f, indent=2)
    for p in record["profiles"]:
        print(p["engine"], "{:.2f} ms".format(p["total_ms"]),
              ", ".join("{} {:.2f}".format(k, v) for k, v in p["ms_by_kind"].items()))
