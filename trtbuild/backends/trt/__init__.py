"""TensorRT: the only package of trtbuild that imports tensorrt, polygraphy or the CUDA runtime.

- `import_tensorrt()`: the tensorrt module with TensorRT's plugins registered once (engines of
  `build.backend: plugins` deserialize only with them), or NoGpuError (exit 3) where it is missing.
- cuda.py (the live GPU, memory, CUDA graphs), profiles.py (optimization profiles: pure, CPU-tested),
  manifest.py (what was built, checked before every load), build.py and plugins.py (the two ways to
  define the network), engine.py (one engine session), runner.py (verify's runner), timer.py (bench's
  timer), inspect.py (what an engine holds).
"""

from trtbuild.errors import NoGpuError

_PLUGINS_READY = False


def trt_logger(trt, verbose=False):
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.ERROR)


def import_tensorrt():
    """The tensorrt module, TensorRT's plugin library registered once; NoGpuError where it is not installed."""
    global _PLUGINS_READY
    try:
        import tensorrt as trt
    except ImportError:
        raise NoGpuError("TensorRT is not installed here; run build on the GPU machine with TensorRT staged "
                         "(README: `PYTHONPATH=$PWD trtpy -m trtbuild build ...`)") from None
    if not _PLUGINS_READY:
        _PLUGINS_READY = True
        try:
            trt.init_libnvinfer_plugins(trt_logger(trt), "")
        except Exception:  # no plugin library: ONNX-parser engines do not need it
            pass
    return trt


def installed_version():
    """The TensorRT version this Python can import (e.g. "8.6.0"), or None: no library loaded, no error."""
    try:
        import tensorrt as trt
    except (ImportError, OSError):
        return None
    return getattr(trt, "__version__", None)
