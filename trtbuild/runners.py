"""Runners with one interface: `infer(feeds) -> logits` (numpy), `close()`, usable as context managers.

- OrtRunner: any ONNX (FP32 export, Q/DQ) in ONNX Runtime on the CPU.
- TrtRunner: a trtbuild engine, checked against its manifest and the live GPU before it is
  deserialized; picks the optimization profile that fits each batch (Polygraphy's TrtRunner).
"""

import os

import numpy as np

from trtbuild.errors import TrtbuildError


def runner_for(path, **kwargs):
    """OrtRunner for .onnx, TrtRunner for .engine / .plan."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".onnx":
        return OrtRunner(path, **kwargs)
    if ext in (".engine", ".plan", ".trt"):
        return TrtRunner(path, **kwargs)
    raise TrtbuildError("candidate {}: unknown kind {!r}; pass an .onnx or a trtbuild .engine".format(path, ext))


def ort_session(model, threads=None, basic_optimizations=False):
    """A quiet CPU ONNX Runtime session for a path or serialized bytes. `basic_optimizations` keeps
    ORT from fusing away intermediate tensors (calibration reads them as extra outputs)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if basic_optimizations:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


class OrtRunner:
    """`path`: an ONNX file, or a serialized model (bytes) such as a Q/DQ variant built in memory."""

    def __init__(self, path, threads=None):
        self.path = path if isinstance(path, str) else "<in-memory ONNX>"
        try:
            self.session = ort_session(path, threads)
        except Exception as e:  # not an ONNX file, or one ONNX Runtime cannot load
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TrtbuildError("{}: ONNX Runtime cannot load it ({})".format(path, first[:200])) from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if "logits" not in outputs:
            raise TrtbuildError("{} has no output named 'logits' (outputs: {}); pass a trtbuild export or a build "
                                "of one".format(path, ", ".join(outputs)))
        self.device = "CPU (ONNX Runtime {})".format(__import__("onnxruntime").__version__)

    def infer(self, feeds):
        return self.session.run(["logits"], {n: feeds[n] for n in self.input_names})[0]

    def close(self):
        self.session = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TrtRunner:
    def __init__(self, path, check=True):
        from trtbuild.build import (check_engine, create_context, deserialize_engine, engine_profiles, fit_feeds,
                                    gpu_info, import_tensorrt)
        from trtbuild.plugins import varlen_feeds

        trt = import_tensorrt()
        entry = check_engine(path, gpu_info(), trt.__version__) if check else {}
        from polygraphy.backend.trt import TrtRunner as _PolyRunner

        self.runtime, engine = deserialize_engine(trt, path)
        self.path = path
        self.entry = entry
        self.engine = engine
        self._fit_feeds = fit_feeds
        self.profiles = engine_profiles(entry)
        self.input_names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)
                            if engine.get_tensor_mode(engine.get_tensor_name(i)) == trt.TensorIOMode.INPUT]
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in self.input_names}
        # a build.varlen engine takes packed inputs; callers pass [batch, seq] ones and infer() packs them
        varlen = varlen_feeds(engine, self.input_names, entry)
        self.varlen, self._pack = varlen is not None, None
        if self.varlen:
            self.input_names, self._pack = varlen
            self.profiles = []
        self.device = "{} (TensorRT {})".format(entry.get("gpu", "GPU"), trt.__version__)
        self.context = create_context(engine, path)  # a one-line error where TensorRT cannot make one
        self.runner = _PolyRunner(self.context)
        self.runner.activate()
        self.profile = 0

    def infer(self, feeds):
        if self.varlen:
            return np.asarray(self.runner.infer(self._pack(feeds))["logits"]).astype(np.float32)
        if self.profiles:
            index, feeds = self._fit_feeds(self.profiles, feeds, self.input_names)
            if index != self.profile:
                self.runner.set_profile(index)
                self.profile = index
        inputs = {n: np.ascontiguousarray(feeds[n].astype(self.dtypes[n], copy=False)) for n in self.input_names}
        out = self.runner.infer(inputs)
        return np.asarray(out["logits"]).astype(np.float32)

    def close(self):
        if getattr(self, "runner", None) is not None:
            self.runner.deactivate()
            self.runner = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
