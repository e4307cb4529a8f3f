"""Where a model runs: ONNX Runtime on the CPU (`ort.py`) and TensorRT on the GPU (`trt/`, the only code of
trtbuild that imports tensorrt, polygraphy or the CUDA runtime). Both runners share one interface:
`infer(feeds) -> logits`, `input_names`, `device`, `close()`, context managers."""

import os

from trtbuild._util import Result
from trtbuild.errors import TrtbuildError

ENGINE_EXTENSIONS = (".engine", ".plan", ".trt")


def runner_for(path, **kwargs):
    """OrtRunner for .onnx, TrtRunner for .engine / .plan."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".onnx":
        from trtbuild.backends.ort import OrtRunner

        return OrtRunner(path, **kwargs)
    if ext in ENGINE_EXTENSIONS:
        from trtbuild.backends.trt.runner import TrtRunner

        return TrtRunner(path, **kwargs)
    raise TrtbuildError("candidate {}: unknown kind {!r}; pass an .onnx or a trtbuild .engine".format(path, ext))


class InspectResult(Result):
    """What `trtbuild inspect` found in an ONNX or an engine (`info`, a dict)."""

    def __init__(self, info):
        self.info = info

    def to_dict(self):
        return self.info

    def summary(self):
        info = self.info
        lines = ["{} ({}, {:.1f} MiB)".format(info["path"], info["kind"], info["bytes"] / (1 << 20))]
        if info["kind"] == "onnx":
            lines.append("  opset {}, {} nodes, {} Q/DQ pairs".format(info["opset"], info["nodes"], info["qdq_pairs"]))
            lines += ["  input  {} {} {}".format(i["name"], i["dtype"], i["dims"]) for i in info["inputs"]]
            lines.append("  output {}".format(", ".join(info["outputs"])))
            return "\n".join(lines)
        entry = info.get("manifest") or {}
        if entry:
            lines.append("  built for {} (sm {}), TensorRT {}, {} in {} s".format(
                entry.get("gpu"), entry.get("compute_capability"), entry.get("tensorrt"), entry.get("precision"),
                entry.get("build_seconds")))
        for t in info.get("tensors", []):
            lines.append("  {:<6} {} {} {}".format(t["mode"].lower(), t["name"], t["dtype"], t.get("profiles", t["shape"])))
        if info.get("layers"):
            lines.append("  layers by precision: " + ", ".join("{} {}".format(k, v) for k, v in sorted(info["layers"].items())))
        if info.get("note"):
            lines.append("  " + info["note"])
        return "\n".join(lines)


def inspect_artifact(path):
    """What is in an ONNX or an engine: inputs, profiles, precision mix, size (an InspectResult)."""
    if not os.path.isfile(path):
        raise TrtbuildError("{} not found; pass an .onnx or a trtbuild .engine".format(path))
    ext = os.path.splitext(path)[1].lower()
    if ext == ".onnx":
        from trtbuild.backends.ort import inspect_onnx

        return InspectResult(dict({"path": path, "bytes": os.path.getsize(path)}, **inspect_onnx(path)))
    if ext not in ENGINE_EXTENSIONS:
        raise TrtbuildError("{}: unknown kind {!r}; pass an .onnx or a trtbuild .engine".format(path, ext))
    from trtbuild.backends.trt.inspect import inspect_engine

    return InspectResult(inspect_engine(path))
