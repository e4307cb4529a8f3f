"""The manifest: what `trtbuild build` made, written beside the engines and checked before every load.

`engines/<sm_XY>-trt<version>/manifest.json` records per engine the GPU, compute capability, TensorRT and
CUDA versions, precision, profiles, the hashes of its inputs and of the engine itself, build time and size.
A runner refuses an engine that is not what its manifest says, or not for this GPU and TensorRT, with a
message that says what to rebuild.
"""

import glob
import os

from trtbuild.errors import TrtbuildError
from trtbuild.workdir import WorkDir, atomic_write_json, read_record, sha256_file

MANIFEST = "manifest.json"
TIMING_CACHE = "timing.cache"
PRECISIONS = ("fp16", "int8", "fp8")


class EngineMismatchError(TrtbuildError):
    """An engine does not fit the live GPU / TensorRT, or its bytes are not what the manifest says."""


def arch_dir(workdir, compute_capability, trt_version):
    return WorkDir(workdir).engine_dir(compute_capability, trt_version)


def read_manifest(directory):
    """The manifest of an engines folder ({"engines": {}} where there is none); a one-line error when it is
    unreadable or malformed."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        return {"engines": {}}
    manifest = read_record(path, "trtbuild build WORKDIR (the manifest is rewritten with the engines)", ("engines",))
    if not isinstance(manifest["engines"], dict) or not all(isinstance(e, dict) for e in manifest["engines"].values()):
        raise EngineMismatchError("{} is malformed (engines must map names to entries); rebuild: trtbuild build "
                                  "WORKDIR".format(path))
    return manifest


def check_engine(engine_path, live_gpu=None, trt_version=None, inputs=True):
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
    for part in _parts(entry, name):
        path = os.path.join(directory, part["file"])
        if not os.path.isfile(path):
            raise EngineMismatchError("engine {}: its part {} is missing; {}".format(engine_path, part["file"], rebuild))
        size = os.path.getsize(path)
        if size != part.get("bytes") or sha256_file(path) != part.get("sha256"):
            which = "" if part["file"] == name else part["file"] + ": "
            raise EngineMismatchError("engine {} is corrupt or truncated ({}{} bytes, manifest says {}); {}".format(
                engine_path, which, size, part.get("bytes"), rebuild))
    if live_gpu is not None and entry.get("compute_capability") != live_gpu.get("compute_capability"):
        raise EngineMismatchError("engine {} was built for compute capability {} ({}), this GPU is {} ({}); "
                                  "{}".format(engine_path, entry.get("compute_capability"), entry.get("gpu"),
                                              live_gpu.get("compute_capability"), live_gpu.get("name"), rebuild))
    if trt_version is not None and entry.get("tensorrt") != trt_version:
        raise EngineMismatchError("engine {} was built with TensorRT {}, this is TensorRT {}; {}".format(
            engine_path, entry.get("tensorrt"), trt_version, rebuild))
    if inputs:
        check_engine_inputs(engine_path, entry, rebuild)
    return entry


def check_engine_inputs(engine_path, entry, rebuild):
    """An engine inside a work directory (WORKDIR/engines/<arch>/) must have been built from that work directory's
    current export (and calibration, for INT8): a stale engine is refused with what to rebuild."""
    from trtbuild.workdir import check_calibration, check_export

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(engine_path))))
    wd = WorkDir(root)
    if not os.path.isfile(wd.export_json) or os.path.basename(os.path.dirname(os.path.dirname(
            os.path.abspath(engine_path)))) != os.path.basename(wd.engines):
        return  # an engine outside a work directory: its manifest entry is all there is to check
    record = check_export(root)
    built = entry.get("sha256", {})
    if entry.get("backend", "onnx") == "plugins":
        weights = record["sha256"].get("weights/model.safetensors")
        stale = built.get("weights") != weights
    elif entry.get("onnx") == os.path.basename(wd.qdq_onnx):
        stale = built.get("onnx") != check_calibration(root, record)["outputs"].get(os.path.basename(wd.qdq_onnx))
    else:
        stale = built.get("onnx") != record["sha256"]["onnx"]
    if not stale and entry.get("precision") == "int8" and built.get("scales") and os.path.isfile(wd.scales):
        stale = built["scales"] != sha256_file(wd.scales)
    if stale:
        raise EngineMismatchError("engine {} was built from another export or calibration than {} holds now; "
                                  "{}".format(engine_path, root, rebuild))


def _parts(entry, name):
    """The plan files of a manifest entry with their size and hash: `files`, or the entry's own engine file."""
    if entry.get("files"):
        return entry["files"]
    n = len(entry.get("profiles") or []) or 1
    return [{"file": name, "profiles": list(range(n)), "bytes": entry.get("engine_bytes"),
             "sha256": (entry.get("sha256") or {}).get("engine")}]


def engine_files(engine_path, entry):
    """[(plan file, [indices into the entry's profiles])]: what an engine is made of. One file with every profile,
    or (a `split` build, one plan per profile) the files its manifest entry lists."""
    directory = os.path.dirname(os.path.abspath(engine_path))
    if not entry:
        return [(engine_path, [0])]
    return [(os.path.join(directory, p["file"]), list(p["profiles"])) for p in _parts(entry, os.path.basename(engine_path))]


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
