"""One engine session: the set-up that verify's runner and bench's timer share.

`EngineSession(path)` checks the engine against its manifest and the live GPU / TensorRT, deserializes
it (the runtime kept alive beside it), creates its execution context, and knows its inputs, outputs,
dtypes and optimization profiles. `fit(feeds)` turns the [batch, seq] feeds a caller has into what the
engine takes: packed for a `build.varlen` engine, else padded to the profile that holds the batch.
"""

import numpy as np

from trtbuild.backends.trt import import_tensorrt, trt_logger
from trtbuild.backends.trt.cuda import gpu_info
from trtbuild.backends.trt.manifest import EngineMismatchError, check_engine
from trtbuild.backends.trt.plugins import varlen_feeds
from trtbuild.backends.trt.profiles import engine_profiles, fit_feeds


def deserialize_engine(trt, path):
    """(runtime, engine) of an engine file, or a one-line error. Keep the runtime as long as the engine
    (TensorRT wants the runtime to outlive its engines); engines of build.backend plugins need the plugins
    that import_tensorrt registers."""
    runtime = trt.Runtime(trt_logger(trt))
    with open(path, "rb") as f:
        engine = runtime.deserialize_cuda_engine(f.read())
    if engine is None:
        raise EngineMismatchError("{} could not be deserialized by TensorRT {} (corrupt, or built by another "
                                  "version); rebuild it with trtbuild build".format(path, trt.__version__))
    return runtime, engine


def create_context(engine, path):
    """An execution context of a deserialized engine, or a one-line error (see build.check_loadable)."""
    context = engine.create_execution_context()
    if context is None:
        raise EngineMismatchError("TensorRT could not create an execution context for {} (with several profiles this "
                                  "can be TensorRT 8.6's Myelin bug NVIDIA/TensorRT#2977); rebuild it with trtbuild "
                                  "build".format(path))
    return context


class EngineSession(object):
    """A checked, deserialized engine with its execution context. Attributes: trt, path, entry (the manifest
    entry; {} unchecked), runtime, engine, context, tensors_in / outputs (the engine's own tensor names),
    inputs (what callers feed: the ONNX export's [batch, seq] inputs), dtypes, profiles, varlen."""

    def __init__(self, path, check=True):
        trt = import_tensorrt()
        self.trt = trt
        self.path = path
        self.entry = check_engine(path, gpu_info(), trt.__version__) if check else {}
        self.runtime, self.engine = deserialize_engine(trt, path)
        engine = self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.tensors_in = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.profiles = engine_profiles(self.entry)
        # a build.varlen engine takes packed inputs; callers pass [batch, seq] ones and fit() packs them
        varlen = varlen_feeds(engine, self.tensors_in, self.entry)
        self.varlen = varlen is not None
        self.inputs, self._pack = varlen or (self.tensors_in, None)
        if self.varlen:
            self.profiles = []
        self.device = "{} (TensorRT {})".format(self.entry.get("gpu", "GPU"), trt.__version__)
        self.context = create_context(engine, path)

    def fit(self, feeds):
        """(profile index or None, feeds as the engine takes them, cast to its dtypes and contiguous)."""
        index = None
        if self.varlen:
            feeds = self._pack(feeds)
        elif self.profiles:
            index, feeds = fit_feeds(self.profiles, feeds, self.tensors_in)
        return index, {n: np.ascontiguousarray(feeds[n].astype(self.dtypes[n], copy=False)) for n in self.tensors_in}

    def close(self):
        self.context = None
        self.engine = None
        self.runtime = None
