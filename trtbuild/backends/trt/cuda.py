"""The live GPU through the CUDA runtime: its name and compute capability, free memory, CUDA graphs.

One handle of libcudart serves all of them (`cudart()`): Polygraphy's where Polygraphy is installed (the
runners allocate through it too), else the library found by name.
"""

import ctypes
import subprocess

from trtbuild.errors import NoGpuError, TrtbuildError

_CUDART = []


def cudart():
    """The CUDA runtime as a ctypes library, or None where there is none."""
    if not _CUDART:
        lib = None
        try:
            from polygraphy import cuda

            lib = cuda.wrapper().handle
        except Exception:  # no Polygraphy, or it found no libcudart
            for name in ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"):
                try:
                    lib = ctypes.CDLL(name)
                    break
                except OSError:
                    continue
        _CUDART.append(lib)
    return _CUDART[0]


def gpu_info(device=0):
    """Name, compute capability, driver and CUDA runtime versions of the live GPU (NoGpuError if none)."""
    info = {}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader",
                              "-i", str(device)], capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            name, cc, driver = [x.strip() for x in out.stdout.strip().splitlines()[0].split(",")]
            info.update(name=name, compute_capability=cc, driver=driver)
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    lib = cudart()
    if lib is not None:
        value = ctypes.c_int()
        if "compute_capability" not in info:
            major, minor = ctypes.c_int(), ctypes.c_int()
            if (lib.cudaDeviceGetAttribute(ctypes.byref(major), 75, device) == 0
                    and lib.cudaDeviceGetAttribute(ctypes.byref(minor), 76, device) == 0):
                info["compute_capability"] = "{}.{}".format(major.value, minor.value)
        if lib.cudaRuntimeGetVersion(ctypes.byref(value)) == 0:
            info["cuda_runtime"] = "{}.{}".format(value.value // 1000, (value.value % 1000) // 10)
    if "compute_capability" not in info:
        raise NoGpuError("no CUDA GPU found (nvidia-smi and libcudart found none); build and engine runs need "
                         "the GPU machine")
    info.setdefault("name", "unknown GPU")
    return info


def gpu_memory():
    """(free, total) bytes of the current GPU via the CUDA runtime, (None, None) if unavailable."""
    lib = cudart()
    if lib is None:
        return None, None
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    if lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)) != 0:
        return None, None
    return free.value, total.value


class CudaGraph:
    """One launch (TensorRT's enqueue of an execution context) captured on a stream as a CUDA graph and
    replayed with one `cudaGraphLaunch`: the kernels' addresses, shapes and arguments are fixed at
    capture, so a new input shape or buffer needs a new capture. The CUDA runtime is Polygraphy's
    (`cuda.wrapper().handle`, a ctypes handle of libcudart; `lib` replaces it in tests).
    `capture()` returns a CudaGraph, or raises TrtbuildError with the step that failed; the stream
    leaves capture mode either way."""

    THREAD_LOCAL = 1  # cudaStreamCaptureModeThreadLocal: other threads' CUDA calls do not break the capture

    def __init__(self, lib, graph, graph_exec):
        self.lib, self.graph, self.graph_exec = lib, graph, graph_exec

    @classmethod
    def capture(cls, stream_ptr, launch, lib=None):
        if lib is None:
            lib = cudart()
        stream = ctypes.c_void_p(stream_ptr)
        status = lib.cudaStreamBeginCapture(stream, ctypes.c_int(cls.THREAD_LOCAL))
        if status:
            raise TrtbuildError("CUDA graph capture could not start (cudaStreamBeginCapture error {})".format(status))
        graph = ctypes.c_void_p()
        launched = False
        try:
            launched = launch()
        except BaseException:  # leave capture mode (or the stream stays unusable), drop what was captured
            lib.cudaStreamEndCapture(stream, ctypes.byref(graph))
            lib.cudaGetLastError()
            if graph.value:
                lib.cudaGraphDestroy(graph)
            raise
        ended = lib.cudaStreamEndCapture(stream, ctypes.byref(graph))
        lib.cudaGetLastError()  # a failed capture leaves its error behind: clear it
        failed = None
        if not launched:
            failed = "the launch failed while captured"
        elif ended or not graph.value:
            failed = "cudaStreamEndCapture error {}".format(ended)
        graph_exec = ctypes.c_void_p()
        if failed is None:
            status = lib.cudaGraphInstantiateWithFlags(ctypes.byref(graph_exec), graph, ctypes.c_ulonglong(0))
            if status or not graph_exec.value:
                failed = "cudaGraphInstantiateWithFlags error {}".format(status)
                lib.cudaGetLastError()
        if failed is not None:
            if graph.value:
                lib.cudaGraphDestroy(graph)
            raise TrtbuildError("CUDA graph capture failed: {}".format(failed))
        return cls(lib, graph, graph_exec)

    def launch(self, stream_ptr):
        status = self.lib.cudaGraphLaunch(self.graph_exec, ctypes.c_void_p(stream_ptr))
        if status:
            raise TrtbuildError("cudaGraphLaunch failed with CUDA error {}".format(status))

    def free(self):
        if self.graph_exec is not None:
            self.lib.cudaGraphExecDestroy(self.graph_exec)
            self.lib.cudaGraphDestroy(self.graph)
        self.graph = self.graph_exec = None
