"""`trtbuild build [--int8]`: FP16 / INT8 TensorRT engines per GPU architecture, through Polygraphy.

The only TensorRT builder code in trtbuild (with trtbuild/plugins.py, which defines the network of
`build.backend: plugins`). TensorRT and Polygraphy are imported inside functions; without them
`build` exits 3.

- FP16 engine from the exported `model.onnx`; INT8 engine from `model.qdq.onnx` (explicit Q/DQ,
  FP16 allowed for the unquantized parts). No implicit calibrator: TensorRT 11 has none, and
  TensorRT 8.6's crashes on the H100 here.
- One optimization profile per length bucket (`build.profiles`, or derived from `data.buckets` and
  `build.max_batch`, or from a corpus's length histogram with `--profiles-from`).
- Output per architecture: `engines/sm<major><minor>-trt<version>/{fp16,int8}.engine`,
  `manifest.json` and `timing.cache` (loaded on rebuild; `timing_cache_warm` in the manifest says a
  cache was offered. TensorRT 8.6 rejects its own Myelin timing cache for BERT graphs, so on the H100
  a rebuild took as long as the first build: 207.0 s vs 208.3 s).
- Version paths (`build_path`): TensorRT <= 10 sets builder flags (FP16, INT8); TensorRT >= 11 has
  neither flag nor implicit INT8 and builds a strongly typed network from an FP16-cast ONNX (FP16)
  or the Q/DQ ONNX (INT8). Only the <= 10 path has run here (TensorRT 8.6 on an H100).
"""

import ctypes
import os
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Tuple

from trtbuild import __version__
from trtbuild.artifacts import WorkDir, atomic_path, atomic_write_json, read_json, sha256_file
from trtbuild.config import ProfileConfig
from trtbuild.errors import NoGpuError, TrtbuildError

PRECISIONS = ("fp16", "int8")
MANIFEST = "manifest.json"
TIMING_CACHE = "timing.cache"
BUILD_ATTEMPTS = 2  # a build whose engine cannot create an execution context is tried once more (check_loadable)


class EngineMismatchError(TrtbuildError):
    """An engine does not fit the live GPU / TensorRT, or its bytes are not what the manifest says."""


def _noop(msg):
    pass


# ---------------------------------------------------------------------------------------------
# Profiles

def bucket_profiles(buckets, max_batch, opt_batch=None, fixed_sequence=False, static_batches=()):
    """One profile per bucket: batch 1..max_batch, opt at the bucket's length and `opt_batch` (default
    max_batch); sequences (previous bucket, bucket], or exactly the bucket with `fixed_sequence` (the
    runner pads a batch to its bucket; TensorRT 8.6 runs a fixed sequence much faster, docs/results/perf-log.md).
    `static_batches`: before each bucket's profile, a fully static (n, bucket) profile per listed batch size n,
    which the runner picks for exactly that batch (a static 64 x 128 FP16 profile ran 3.93 ms vs 4.70 ms)."""
    opt_batch = min(opt_batch or max_batch, max_batch)
    out, low = [], 1
    for b in sorted(buckets):
        for n in sorted(set(static_batches)):
            if 1 <= n <= max_batch:
                out.append(ProfileConfig(min=(n, b), opt=(n, b), max=(n, b)))
        out.append(ProfileConfig(min=(1, b if fixed_sequence else low), opt=(opt_batch, b), max=(max_batch, b)))
        low = b + 1
    return out


def profiles_from_lengths(lengths, max_length, max_batch, quantiles=(0.5, 0.8, 0.95, 1.0), multiple=8,
                          fixed_sequence=False):
    """Buckets from a corpus's token-length histogram: upper edges at the given quantiles, rounded up
    to a multiple of 8 and capped at max_length; then one profile per bucket."""
    import numpy as np

    if not lengths:
        raise TrtbuildError("no lengths to derive profiles from; pass a non-empty corpus to --profiles-from")
    arr = np.minimum(np.asarray(lengths), max_length)
    edges = []
    for q in quantiles:
        edge = int(np.ceil(np.quantile(arr, q) / multiple) * multiple)
        edge = max(multiple, min(edge, max_length))
        if not edges or edge > edges[-1]:
            edges.append(edge)
    return edges, bucket_profiles(edges, max_batch, fixed_sequence=fixed_sequence)


def config_profiles(config, max_length):
    buckets = [b for b in config.data.buckets if b <= max_length] or [max_length]
    if config.build.varlen:
        return [varlen_profile(config, sorted(buckets))]
    if config.build.profiles:
        return list(config.build.profiles)
    return bucket_profiles(buckets, config.build.max_batch, config.build.opt_batch, config.build.fixed_sequence,
                           config.build.static_batches)


def varlen_profile(config, buckets):
    """The one (batch, longest text) profile of a build.varlen engine: batch 1..max_batch, texts up to the largest
    of the (sorted) buckets; TensorRT optimizes for opt_batch texts of the middle bucket."""
    from trtbuild.plugins import VARLEN_MAX_SEQUENCE

    if buckets[-1] > VARLEN_MAX_SEQUENCE:
        raise TrtbuildError("build.varlen takes texts of up to {} tokens; the largest bucket is {}: lower "
                            "data.buckets".format(VARLEN_MAX_SEQUENCE, buckets[-1]))
    opt_batch = config.build.opt_batch or config.build.max_batch
    return ProfileConfig((1, 1), (opt_batch, buckets[len(buckets) // 2]), (config.build.max_batch, buckets[-1]))


def varlen_shapes(profile):
    """{input: (min, opt, max)} of the packed inputs for a varlen_profile (batch, seq) ProfileConfig."""
    (b0, s0), (b1, s1), (b2, s2) = profile.min, profile.opt, profile.max
    tokens = ((b0 * s0,), (b1 * s1,), (b2 * s2,))
    return {"input_ids": tokens, "segment_ids": tokens, "cu_seqlens": ((b0 + 1,), (b1 + 1,), (b2 + 1,)),
            "max_seqlen": ((s0,), (s1,), (s2,))}


def pick_profile(profiles, batch, sequence):
    """Index of the first profile whose [min, max] holds (batch, sequence), or None."""
    for i, p in enumerate(profiles):
        if p.min[0] <= batch <= p.max[0] and p.min[1] <= sequence <= p.max[1]:
            return i
    return None


def fit_profile(profiles, batch, sequence):
    """(profile index, sequence length to pad to) for a batch: the profile that holds it as it is, else the
    one that holds it after the least padding of the sequence (a fixed-sequence bucket profile); or None."""
    exact = pick_profile(profiles, batch, sequence)
    if exact is not None:
        return exact, sequence
    best = None
    for i, p in enumerate(profiles):
        if p.min[0] <= batch <= p.max[0] and p.max[1] >= sequence:
            padded = max(sequence, p.min[1])
            if best is None or padded < best[1]:
                best = (i, padded)
    return best


def engine_profiles(entry):
    """The optimization profiles a manifest entry records, as ProfileConfigs."""
    return [ProfileConfig(tuple(p["min"]), tuple(p["opt"]), tuple(p["max"])) for p in entry.get("profiles", [])]


def fit_feeds(profiles, feeds, input_names):
    """(profile index, feeds) for a batch on an engine with `profiles`: the inputs padded to the profile's
    sequence where it needs it (fit_profile, pad_sequence). One-line error when no profile holds the batch."""
    batch, seq = feeds[input_names[0]].shape
    fit = fit_profile(profiles, batch, seq)
    if fit is None:
        raise TrtbuildError("batch {} x seq {} fits none of the engine's profiles ({}); rebuild with matching "
                            "build.profiles".format(batch, seq, ", ".join(
                                "{}..{}".format(p.min, p.max) for p in profiles)))
    index, padded = fit
    if padded != seq:
        feeds = pad_sequence({n: feeds[n] for n in input_names}, padded)
    return index, feeds


def pad_sequence(feeds, length):
    """Pad every [batch, seq] input to `length` positions: token ids and types 0, attention mask 0 (padded
    positions are masked out, so the logits do not change). Needs an attention_mask input."""
    import numpy as np

    if "attention_mask" not in feeds:
        raise TrtbuildError("this engine's profiles need the sequence padded, and the model has no attention_mask "
                            "input to mask the padding; rebuild with build.fixed_sequence: false")
    out = {}
    for name, arr in feeds.items():
        extra = length - arr.shape[1]
        out[name] = np.pad(arr, ((0, 0), (0, extra))) if extra > 0 else arr
    return out


# ---------------------------------------------------------------------------------------------
# TensorRT version paths

@dataclass(frozen=True)
class BuildPath:
    """How to build one precision with one TensorRT version."""

    precision: str
    onnx: str  # which ONNX of the work directory: model.onnx, model.qdq.onnx (or an FP16-cast variant)
    flags: Tuple[str, ...]  # builder flags to set (names of trt.BuilderFlag)
    strongly_typed: bool
    cast_fp16: bool  # the ONNX must be cast to FP16 first (strongly typed FP16)


def build_path(trt_version, precision):
    """The build recipe for a TensorRT version string (e.g. "8.6.0", "10.13.0", "11.0.0")."""
    if precision not in PRECISIONS:
        raise TrtbuildError("unknown precision {!r}; use fp16 or int8".format(precision))
    major = int(str(trt_version).split(".")[0])
    if major >= 11:  # no FP16/INT8 builder flags, no implicit INT8: types come from the network
        if precision == "fp16":
            return BuildPath("fp16", "model.onnx", (), True, True)
        return BuildPath("int8", "model.qdq.onnx", (), True, True)
    if precision == "fp16":
        return BuildPath("fp16", "model.onnx", ("FP16",), False, False)
    return BuildPath("int8", "model.qdq.onnx", ("FP16", "INT8"), False, False)


# ---------------------------------------------------------------------------------------------
# The live GPU

def _cudart():
    for name in ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


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
    lib = _cudart()
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


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise NoGpuError("TensorRT is not installed here; run build on the GPU machine with TensorRT staged "
                         "(README: `PYTHONPATH=$PWD trtpy -m trtbuild build ...`)") from None
    global _PLUGINS_READY
    if not _PLUGINS_READY:  # engines of build.backend plugins deserialize only with TensorRT's plugins registered
        _PLUGINS_READY = True
        try:
            trt.init_libnvinfer_plugins(_trt_logger(trt), "")
        except Exception:  # no plugin library: ONNX-parser engines do not need it
            pass
    return trt


_PLUGINS_READY = False


def arch_dir(workdir, compute_capability, trt_version):
    return WorkDir(workdir).path("engines", "sm{}-trt{}".format(compute_capability.replace(".", ""), trt_version))


# ---------------------------------------------------------------------------------------------
# Manifest: written at build, checked before every deserialization

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


# ---------------------------------------------------------------------------------------------
# Build

@dataclass
class BuildResult:
    engine: str
    precision: str
    gpu: str
    compute_capability: str
    tensorrt: str
    profiles: List[dict]
    build_seconds: float
    timing_cache_warm: bool
    engine_bytes: int
    onnx: str
    manifest: str
    layers: Dict[str, int] = field(default_factory=dict)

    def to_dict(self):
        return asdict(self)


def _trt_logger(trt, verbose=False):
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.ERROR)


def build_engine(config, precision="fp16", profiles=None, progress=_noop, verbose=False):
    """Build one engine for the live GPU; returns a BuildResult and updates the manifest."""
    from trtbuild.export import check_export

    wd = WorkDir(config.workdir)
    record = check_export(wd.root)
    trt = import_tensorrt()
    gpu = gpu_info()
    path = build_path(trt.__version__, precision)
    onnx_path = wd.path(path.onnx)
    if precision == "int8" and not os.path.isfile(onnx_path):
        raise TrtbuildError("{} has no {}; run `trtbuild calibrate {}` first".format(wd.root, path.onnx, wd.root))
    if path.cast_fp16:
        raise TrtbuildError("TensorRT {} builds strongly typed networks only; the FP16-cast ONNX it needs is "
                            "not implemented yet (tested path: TensorRT <= 10)".format(trt.__version__))
    profiles = profiles or config_profiles(config, record["max_length"])
    out_dir = arch_dir(wd.root, gpu["compute_capability"], trt.__version__)
    os.makedirs(out_dir, exist_ok=True)
    cache_path = os.path.join(out_dir, TIMING_CACHE)
    warm = os.path.isfile(cache_path)

    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, Profile

    source = path.onnx if config.build.backend == "onnx" else "the checkpoint with TensorRT's BERT plugins{}".format(
        " (variable length)" if config.build.varlen else "")
    progress("building {} engine for {} (sm {}, TensorRT {}) from {}, {} profile(s), timing cache {}".format(
        precision.upper(), gpu["name"], gpu["compute_capability"], trt.__version__, source, len(profiles),
        "warm" if warm else "cold"))
    plugins = config.build.backend == "plugins"
    varlen = config.build.varlen  # (the config allows it with plugins only)
    trt_profiles = []
    for p in profiles:
        prof = Profile()
        if varlen:
            for name, (lo, opt, hi) in varlen_shapes(p).items():
                prof.add(name, min=lo, opt=opt, max=hi)
        else:
            for name in record["inputs"]:
                prof.add(name, min=p.min, opt=p.opt, max=p.max)
        trt_profiles.append(prof)
    extra, source_path, keep = {}, onnx_path, None
    if plugins:  # as demo/BERT: no cuDNN tactics (its library is a stand-in here); the FP32 classifier head and
        # the FP16 outputs of the INT8 GEMMs are precision requests the builder should follow where it can
        extra = dict(tactic_sources=[trt.TacticSource.CUBLAS, trt.TacticSource.CUBLAS_LT], precision_constraints="prefer")
        source_path, network, keep = _plugin_network(trt, config, wd, record, precision, profiles, verbose)
    else:
        network = NetworkFromOnnxPath(onnx_path, strongly_typed=path.strongly_typed or None)
    for attempt in range(BUILD_ATTEMPTS):
        create = CreateConfig(
            fp16="FP16" in path.flags, int8="INT8" in path.flags, profiles=trt_profiles, **extra,
            load_timing_cache=cache_path if warm and attempt == 0 else None,
            memory_pool_limits={trt.MemoryPoolType.WORKSPACE: config.build.workspace_mib << 20},
            builder_optimization_level=config.build.optimization_level,
            profiling_verbosity=trt.ProfilingVerbosity.DETAILED)
        start = time.perf_counter()
        with atomic_path(cache_path) as tmp_cache:
            # Polygraphy merges into an existing file at the save path; the temp name must not exist yet
            # (the loaded cache is already in the builder's config, so the saved one holds old + new).
            os.remove(tmp_cache)
            engine_bytes = EngineBytesFromNetwork(network, config=create, save_timing_cache=tmp_cache)()
        seconds = time.perf_counter() - start
        if engine_bytes is None:
            raise TrtbuildError("TensorRT failed to build the {} engine (run with --verbose for the log)".format(
                precision))
        data = bytes(engine_bytes)
        layers, error = check_loadable(trt, data)
        if error is None:
            break
        if attempt + 1 < BUILD_ATTEMPTS:
            progress("TensorRT built a {} engine it cannot run ({}); building again without the timing "
                     "cache".format(precision, error))
    else:
        raise TrtbuildError(
            "TensorRT {} built {} {} engines in a row that it cannot run ({}: with {} profiles this is TensorRT 8.6's "
            "Myelin bug NVIDIA/TensorRT#2977); run the build again, or use fewer data.buckets".format(
                trt.__version__, BUILD_ATTEMPTS, precision, error, len(profiles)))
    del keep  # the weights TensorRT read from numpy while building
    warm = warm and attempt == 0
    engine_path = os.path.join(out_dir, "{}.engine".format(precision))
    with atomic_path(engine_path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    entry = {
        "precision": precision, "gpu": gpu["name"], "compute_capability": gpu["compute_capability"],
        "driver": gpu.get("driver"), "cuda_runtime": gpu.get("cuda_runtime"), "tensorrt": trt.__version__,
        "trtbuild": __version__, "onnx": path.onnx, "backend": config.build.backend, "inputs": record["inputs"],
        "profiles": [p.to_dict() for p in profiles], "build_seconds": round(seconds, 2), "timing_cache_warm": warm,
        "engine_bytes": len(data), "layers": layers, "build_attempts": attempt + 1,
        "builder": {"flags": list(path.flags), "strongly_typed": path.strongly_typed,
                    "workspace_mib": config.build.workspace_mib,
                    "optimization_level": config.build.optimization_level},
        "sha256": {"onnx": sha256_file(onnx_path), "engine": _sha256_bytes(data)},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if precision == "int8" and os.path.isfile(wd.path("scales.json")):
        entry["sha256"]["scales"] = sha256_file(wd.path("scales.json"))
    if varlen:  # the engine's own inputs are the packed ones; runners pack [batch, seq] feeds (plugins.pack_varlen)
        from trtbuild.plugins import VARLEN_INPUTS

        entry["varlen"] = True
        entry["engine_inputs"] = list(VARLEN_INPUTS)
    if plugins:  # the checkpoint's weights, as the export recorded them
        entry["source"] = source_path
        entry["gelu"] = config.build.gelu_mode
        entry["sha256"]["weights"] = record.get("sha256", {}).get("weights/model.safetensors")
    manifest = read_manifest(out_dir)
    manifest.setdefault("engines", {})["{}.engine".format(precision)] = entry
    manifest["architecture"] = os.path.basename(out_dir)
    manifest_path = os.path.join(out_dir, MANIFEST)
    atomic_write_json(manifest_path, manifest)
    progress("built {} ({:.1f} MiB) in {:.1f} s".format(engine_path, len(data) / (1 << 20), seconds))
    return BuildResult(engine=engine_path, precision=precision, gpu=gpu["name"],
                       compute_capability=gpu["compute_capability"], tensorrt=trt.__version__,
                       profiles=[p.to_dict() for p in profiles], build_seconds=round(seconds, 2),
                       timing_cache_warm=warm, engine_bytes=len(data), onnx=onnx_path, manifest=manifest_path,
                       layers=layers)


def _plugin_network(trt, config, wd, record, precision, profiles, verbose):
    """(source path, (builder, network), keep-alive) for `build.backend: plugins` (trtbuild/plugins.py)."""
    from trtbuild.plugins import SAFETENSORS, layer_ranges, load_bert, plugin_network

    checkpoint = config.model.checkpoint or record.get("checkpoint")
    if not checkpoint:
        raise TrtbuildError("build.backend plugins reads the checkpoint's weights: set model.checkpoint")
    spec, weights = load_bert(checkpoint, record.get("sha256", {}).get("weights/" + SAFETENSORS))
    ranges = None
    if precision == "int8":
        if not os.path.isfile(wd.path("scales.json")):
            raise TrtbuildError("{} has no scales.json; run `trtbuild calibrate` first".format(wd.root))
        ranges = layer_ranges(read_json(wd.path("scales.json")), spec.layers)
    buckets = sorted({p.max[1] for p in profiles})
    logger = _trt_logger(trt, verbose)
    builder = trt.Builder(logger)
    network, keep = plugin_network(trt, builder, spec, weights, record["inputs"], precision, buckets, ranges, logger,
                                   varlen=config.build.varlen, gelu_mode=config.build.gelu_mode)
    return os.path.join(checkpoint, SAFETENSORS), (builder, network), (keep, weights, builder)


def _sha256_bytes(data):
    import hashlib

    return hashlib.sha256(data).hexdigest()


def check_loadable(trt, data):
    """(layer counts, None) when TensorRT can deserialize the engine bytes and create an execution context, else
    ({}, why). TensorRT 8.6 can build multi-profile engines whose context creation fails (a Myelin 'missing offset in
    id2offset', NVIDIA/TensorRT#2977); a build must not hand such an engine on."""
    runtime = trt.Runtime(_trt_logger(trt))
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        return {}, "it does not deserialize"
    context = engine.create_execution_context()
    if context is None:
        del engine
        return {}, "no execution context"
    del context
    layers = layer_precisions(trt, engine)
    del engine
    return layers, None


def create_context(engine, path):
    """An execution context of a deserialized engine, or a one-line error (see check_loadable)."""
    context = engine.create_execution_context()
    if context is None:
        raise EngineMismatchError("TensorRT could not create an execution context for {} (with several profiles this "
                                  "can be TensorRT 8.6's Myelin bug NVIDIA/TensorRT#2977); rebuild it with trtbuild "
                                  "build".format(path))
    return context


def deserialize_engine(trt, path):
    """(runtime, engine) of an engine file, or a one-line error. Keep the runtime as long as the engine
    (TensorRT wants the runtime to outlive its engines); engines of build.backend plugins need the plugins
    that import_tensorrt registers."""
    runtime = trt.Runtime(_trt_logger(trt))
    with open(path, "rb") as f:
        engine = runtime.deserialize_cuda_engine(f.read())
    if engine is None:
        raise EngineMismatchError("{} could not be deserialized by TensorRT {} (corrupt, or built by another "
                                  "version); rebuild it with trtbuild build".format(path, trt.__version__))
    return runtime, engine


def layer_precisions(trt, engine):
    """Layer count per precision of a deserialized engine from the engine inspector (TensorRT >= 8.2), {} where
    unavailable."""
    import json

    try:
        inspector = engine.create_engine_inspector()
        info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    except Exception:  # the inspector is a diagnostic; its absence must not fail a build
        return {}
    counts = {}
    for layer in info.get("Layers", []):
        precision = _layer_precision(layer)
        counts[precision] = counts.get(precision, 0) + 1
    return counts


def _layer_precision(layer):
    """The precision of a layer's first output (TensorRT's inspector names it inside a format string,
    e.g. "Row major linear Int8 format"). With dynamic shapes TensorRT 8.6 reports "N/A due to dynamic
    shapes" and compiles the whole encoder into one Myelin ForeignNode per profile: then the layer
    type is counted instead (e.g. {"myelin": 4, "reformat": 3, "shapehosttodevice": 4})."""
    if not isinstance(layer, dict):
        text = str(layer)
        outputs = []
    else:
        outputs = list(layer.get("Outputs", []) or []) + list(layer.get("Inputs", []) or [])
        text = ""
    for t in outputs:
        text = str(t.get("Format/Datatype", "")) if isinstance(t, dict) else str(t)
        if text:
            break
    lowered = text.lower()
    for needle, tag in (("int8", "int8"), ("half", "fp16"), ("fp16", "fp16"), ("float", "fp32"), ("fp32", "fp32"),
                        ("int32", "int32"), ("bool", "bool")):
        if needle in lowered:
            return tag
    if isinstance(layer, dict) and layer.get("LayerType"):
        return str(layer["LayerType"]).lower()
    return "other"


def build_engines(config, int8=False, profiles=None, progress=_noop, verbose=False, fp16=True):
    """FP16 (unless `fp16` is False); INT8 too with `int8`."""
    if not fp16 and not int8:
        raise TrtbuildError("nothing to build: --no-fp16 needs --int8")
    results = [build_engine(config, "fp16", profiles, progress, verbose)] if fp16 else []
    if int8:
        results.append(build_engine(config, "int8", profiles, progress, verbose))
    return results


# ---------------------------------------------------------------------------------------------
# inspect

def inspect_artifact(path):
    """What is in an ONNX or an engine: inputs, profiles, precision mix, size."""
    if not os.path.isfile(path):
        raise TrtbuildError("{} not found; pass an .onnx or a trtbuild .engine".format(path))
    ext = os.path.splitext(path)[1].lower()
    info = {"path": path, "bytes": os.path.getsize(path)}
    if ext == ".onnx":
        import onnx

        try:
            model = onnx.load(path, load_external_data=False)
        except Exception as e:  # protobuf raises DecodeError and friends
            raise TrtbuildError("{} is not a readable ONNX file ({})".format(path, str(e).splitlines()[0] if str(e) else type(e).__name__)) from None
        ops = {}
        for n in model.graph.node:
            ops[n.op_type] = ops.get(n.op_type, 0) + 1
        info.update(kind="onnx", opset=max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
                    inputs=[{"name": i.name, "dims": [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim],
                             "dtype": onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type)} for i in model.graph.input],
                    outputs=[o.name for o in model.graph.output], nodes=len(model.graph.node), ops=dict(sorted(ops.items())),
                    qdq_pairs=ops.get("QuantizeLinear", 0))
        return info
    if ext not in (".engine", ".plan", ".trt"):
        raise TrtbuildError("{}: unknown kind {!r}; pass an .onnx or a trtbuild .engine".format(path, ext))
    directory = os.path.dirname(os.path.abspath(path))
    entry = read_manifest(directory).get("engines", {}).get(os.path.basename(path))
    info.update(kind="engine", manifest=entry)
    try:
        trt = import_tensorrt()
    except NoGpuError:
        info["note"] = "TensorRT not installed: manifest only"
        return info
    runtime, engine = deserialize_engine(trt, path)
    tensors = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        t = {"name": name, "mode": str(engine.get_tensor_mode(name)).split(".")[-1],
             "dtype": str(engine.get_tensor_dtype(name)).split(".")[-1], "shape": list(engine.get_tensor_shape(name))}
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            t["profiles"] = [[list(s) for s in engine.get_tensor_profile_shape(name, p)]
                             for p in range(engine.num_optimization_profiles)]
        tensors.append(t)
    layers = layer_precisions(trt, engine)
    info.update(tensors=tensors, profiles=engine.num_optimization_profiles, layers=layers, tensorrt=trt.__version__)
    return info
