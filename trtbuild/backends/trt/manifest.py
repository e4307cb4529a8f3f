"""The manifest: what `trtbuild build` made, written beside the engines and checked before every load.

`engines/<sm_XY>-trt<version>/manifest.json` records per engine the GPU, compute capability, TensorRT and
CUDA versions, precision, profiles, the hashes of its inputs and of the engine itself, build time and size.
A runner refuses an engine that is not what its manifest says, or not for this GPU and TensorRT, with a
message that says what to rebuild.
"""

import glob
import os

from trtbuild.errors import TrtbuildError
from trtbuild.workdir import WorkDir, atomic_write_json, read_json, sha256_file

MANIFEST = "manifest.json"
TIMING_CACHE = "timing.cache"
PRECISIONS = ("fp16", "int8")


class EngineMismatchError(TrtbuildError):
    """An engine does not fit the live GPU / TensorRT, or its bytes are not what the manifest says."""


def arch_dir(workdir, compute_capability, trt_version):
    return WorkDir(workdir).engine_dir(compute_capability, trt_version)


def read_manifest(directory):
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        return {"engines": {}}
    return read_json(path)


def check_engine(engine_path, live_gpu=None, trt_version=None):
    """Refuse an engine that is not what its manifest says or not for this GPU / TensorRT.

    Returns the manifest entry. Messages say what to rebuild."""
    directory = os.path.dirname(os.path.abspath(engine_path))
    name = os.path.basename(engine_path)
    rebuild = "rebuild it on this machine: trtbuild build WORKDIR{}".format(" --int8" if name.startswith("int8") else "")
    if not os.path.isfile(engine_path):
        raise EngineMismatchError("engine {} not found; {}".format(engine_path, rebuild))
    entry = read_manifest(directory).get("engines", {}).get(name)
    if entry is None:
        raise EngineMismatchError("engine {} has no entry in {}; {}".format(
            engine_path, os.path.join(directory, MANIFEST), rebuild))
    size = os.path.getsize(engine_path)
    if size != entry.get("engine_bytes") or sha256_file(engine_path) != entry.get("sha256", {}).get("engine"):
        raise EngineMismatchError("engine {} is corrupt or truncated ({} bytes, manifest says {}); {}".format(
            engine_path, size, entry.get("engine_bytes"), rebuild))
    if live_gpu is not None and entry.get("compute_capability") != live_gpu.get("compute_capability"):
        raise EngineMismatchError("engine {} was built for compute capability {} ({}), this GPU is {} ({}); "
                                  "{}".format(engine_path, entry.get("compute_capability"), entry.get("gpu"),
                                              live_gpu.get("compute_capability"), live_gpu.get("name"), rebuild))
    if trt_version is not None and entry.get("tensorrt") != trt_version:
        raise EngineMismatchError("engine {} was built with TensorRT {}, this is TensorRT {}; {}".format(
            engine_path, entry.get("tensorrt"), trt_version, rebuild))
    return entry


def write_entry(directory, name, entry):
    """Add (or replace) one engine's entry in the manifest of `directory`; returns the manifest's path."""
    manifest = read_manifest(directory)
    manifest.setdefault("engines", {})[name] = entry
    manifest["architecture"] = os.path.basename(directory)
    path = os.path.join(directory, MANIFEST)
    atomic_write_json(path, manifest)
    return path


def live_target():
    """(compute capability, TensorRT version) of this machine; TrtbuildError (NoGpuError) where either is missing."""
    from trtbuild.backends.trt import import_tensorrt
    from trtbuild.backends.trt.cuda import gpu_info

    return gpu_info()["compute_capability"], import_tensorrt().__version__


def find_engine(workdir, precision, live=live_target):
    """The `precision` engine of a work directory: the one built for the live GPU and TensorRT when several
    are there (`live()` gives (compute capability, TensorRT version) or raises TrtbuildError), else the first.
    A one-line error when there is none."""
    wd = WorkDir(workdir)
    found = sorted(glob.glob(os.path.join(wd.engines, "*", precision + ".engine")))
    if not found:
        raise TrtbuildError("no {} engine under {}; run `trtbuild build {}{}` on the GPU machine".format(
            precision, wd.engines, wd.root, " --int8" if precision == "int8" else ""))
    if len(found) > 1 and live is not None:
        try:
            here = os.path.join(wd.engine_dir(*live()), precision + ".engine")
            if os.path.isfile(here):
                return here
        except TrtbuildError:
            pass
    return found[0]
