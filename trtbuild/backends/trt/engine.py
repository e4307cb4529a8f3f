"""One engine session: the set-up that verify's runner, bench's timer and build's self-test share.

`EngineSession(path)` checks the engine against its manifest and the live GPU / TensorRT, deserializes
it (each runtime kept alive beside its engine), creates the execution contexts, and knows the inputs,
outputs, dtypes and optimization profiles. An engine can be several plan files ("parts"): where TensorRT
8.6 cannot build one engine whose every profile runs (NVIDIA/TensorRT#2977), build writes one plan per
profile and the manifest entry lists them (`files`). `fit(feeds)` turns the [batch, seq] feeds a caller
has into what the engine takes (packed for a `build.varlen` engine, else padded to the profile that holds
the batch) and says which part and profile run them.
"""

import numpy as np

from trtbuild.backends.trt import import_tensorrt, trt_logger
from trtbuild.backends.trt.cuda import gpu_info
from trtbuild.backends.trt.manifest import EngineMismatchError, check_engine, engine_files
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
    """An execution context of a deserialized engine, or a one-line error."""
    context = engine.create_execution_context()
    if context is None:
        raise EngineMismatchError("TensorRT could not create an execution context for {} (with several profiles this "
                                  "can be TensorRT 8.6's Myelin bug NVIDIA/TensorRT#2977); rebuild it with trtbuild "
                                  "build".format(path))
    return context


class Part(object):
    """One plan file of an engine: its runtime, engine and execution context, the indices (into the manifest's
    profile list) of the profiles it holds, and the profile its context is set to."""

    def __init__(self, trt, path, profile_ids):
        self.path = path
        self.runtime, self.engine = deserialize_engine(trt, path)
        self.context = create_context(self.engine, path)
        self.profile_ids = list(profile_ids)
        self.current = 0


class EngineSession(object):
    """A checked, deserialized engine with its execution contexts. Attributes: trt, path, entry (the manifest
    entry; {} unchecked), parts, engine / context (of the first part), tensors_in / outputs (the engine's own
    tensor names), inputs (what callers feed: the ONNX export's [batch, seq] inputs), dtypes, profiles, varlen."""

    def __init__(self, path, check=True):
        trt = import_tensorrt()
        self.trt = trt
        self.path = path
        self.entry = check_engine(path, gpu_info(), trt.__version__) if check else {}
        self.parts = [Part(trt, f, ids) for f, ids in engine_files(path, self.entry)]
        self.engine, self.context = self.parts[0].engine, self.parts[0].context
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

    @property
    def device_memory_size(self):
        return max(engine_device_memory(p.engine) for p in self.parts)

    def fit(self, feeds):
        """(part, profile index within the part's engine, feeds as that engine takes them: cast to its dtypes and
        contiguous)."""
        index = 0
        if self.varlen:
            feeds = self._pack(feeds)
        elif self.profiles:
            index, feeds = fit_feeds(self.profiles, feeds, self.tensors_in)
        part = next((p for p in self.parts if index in p.profile_ids), self.parts[0])
        local = part.profile_ids.index(index) if index in part.profile_ids else 0
        return part, local, {n: np.ascontiguousarray(feeds[n].astype(self.dtypes[n], copy=False))
                             for n in self.tensors_in}

    def close(self):
        for p in self.parts:
            p.context = p.engine = p.runtime = None
        self.parts = []
        self.context = self.engine = None


def engine_device_memory(engine):
    """The activation memory an execution context of `engine` needs: `device_memory_size_v2` where the bindings
    have it (TensorRT >= 10.1; 11 removed `device_memory_size`), else `device_memory_size`."""
    if hasattr(engine, "device_memory_size_v2"):
        return int(engine.device_memory_size_v2)
    return int(engine.device_memory_size)
