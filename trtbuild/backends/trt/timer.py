"""`TrtTimer`: a trtbuild engine driven through its execution context, for `trtbuild bench`.

No Polygraphy bookkeeping in the timed path: device buffers sized per shape, the profile that fits picked,
launches on one stream, optionally replayed as a CUDA graph (`CudaGraph`).
"""

import numpy as np

from trtbuild.backends.trt.cuda import CudaGraph, gpu_memory
from trtbuild.backends.trt.engine import EngineSession
from trtbuild.errors import TrtbuildError


class TrtTimer:
    """A trtbuild engine driven through its execution context: device buffers sized per shape, the
    profile that fits picked, launches on one stream. `device()` times execute + sync, `e2e()`
    adds the host-to-device input copies and the logits copy back. With `cuda_graph` (bench's
    default) `prepare()` captures the enqueue as a CUDA graph per shape and both replay it, as a
    serving loop would; `device_plain()` times the plain enqueue beside it. A capture that fails
    leaves the plain enqueue in use and its reason in `graph_error`."""

    def __init__(self, path, cuda_graph=False):
        from polygraphy import cuda

        self.cuda = cuda
        free_before = gpu_memory()[0]
        self.session = EngineSession(path)
        s = self.session
        self.entry, self.engine, self.context = s.entry, s.engine, s.context
        self.tensors_in, self.outputs, self.inputs, self.dtypes = s.tensors_in, s.outputs, s.inputs, s.dtypes
        self.varlen = s.varlen
        self.stream = cuda.Stream()
        self.buffers = {}
        self.host = {}
        self.cuda_graph = cuda_graph
        self.graph = None
        self.graph_error = None
        self.memory_bytes = max(0, free_before - gpu_memory()[0]) if free_before else None
        self.activation_bytes = s.device_memory_size

    def prepare(self, feeds):
        self._free_graph()  # captured with the previous shape and buffers
        # timed as the engine runs it: packed (varlen) or padded to its profile's sequence, outside the timing
        part, index, feeds = self.session.fit(feeds)
        self.context = part.context
        if index != part.current:
            self.context.set_optimization_profile_async(index, self.stream.ptr)
            self.stream.synchronize()
            part.current = index
        for name in self.tensors_in:
            host = feeds[name]
            self.host[name] = host
            self.context.set_input_shape(name, host.shape)
            self._buffer(name, host.shape).copy_from(host, self.stream)
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            self.host[name] = np.empty(shape, dtype=self.dtypes[name])
            self._buffer(name, shape)
        for name in self.tensors_in + self.outputs:
            self.context.set_tensor_address(name, self.buffers[name].ptr)
        self.stream.synchronize()
        if self.cuda_graph and self.graph_error is None:
            self._enqueue()  # TensorRT applies new shapes on the first enqueue: once outside the capture
            self.stream.synchronize()
            try:
                self.graph = CudaGraph.capture(self.stream.ptr, lambda: self.context.execute_async_v3(self.stream.ptr))
            except Exception as e:  # (TensorRT's bindings raise their own errors) the plain enqueue from here on
                self.graph_error = str(e) if isinstance(e, TrtbuildError) else "CUDA graph capture failed: {}".format(e)

    def _free_graph(self):
        if self.graph is not None:
            self.graph.free()
            self.graph = None

    def _enqueue(self):
        if not self.context.execute_async_v3(self.stream.ptr):
            raise TrtbuildError("TensorRT execute_async_v3 failed; see the log above")

    def _launch(self):
        if self.graph is not None:
            self.graph.launch(self.stream.ptr)
        else:
            self._enqueue()

    @property
    def graph_status(self):
        """For the report: True (replayed as a CUDA graph), False (not asked) or why the capture failed."""
        return self.graph_error or bool(self.cuda_graph)

    def _buffer(self, name, shape):
        buf = self.buffers.get(name)
        if buf is None:
            buf = self.buffers[name] = self.cuda.DeviceArray(shape=shape, dtype=self.dtypes[name])
        else:
            buf.resize(shape)
        return buf

    def device(self):
        self._launch()
        self.stream.synchronize()

    def device_plain(self):
        self._enqueue()
        self.stream.synchronize()

    def e2e(self):
        for name in self.tensors_in:
            self.buffers[name].copy_from(self.host[name], self.stream)
        self._launch()
        for name in self.outputs:
            self.buffers[name].copy_to(self.host[name], self.stream)
        self.stream.synchronize()

    def close(self):
        self._free_graph()
        for buf in self.buffers.values():
            buf.free()
        self.buffers = {}
        self.stream.free()
        self.session.close()
        self.context = None
        self.engine = None
