"""`trtbuild build [--int8]`: FP16 / INT8 TensorRT engines per GPU architecture, through Polygraphy.

Builds through Polygraphy (network from ONNX, config, profiles, timing cache); plugins.py defines the
network of `build.backend: plugins`. Without TensorRT `build` exits 3.

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

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Tuple

from trtbuild import __version__
from trtbuild._util import Result, noop
from trtbuild.backends.trt import import_tensorrt, trt_logger
from trtbuild.backends.trt.cuda import gpu_info
from trtbuild.backends.trt.inspect import layer_precisions
from trtbuild.backends.trt.manifest import PRECISIONS, TIMING_CACHE, arch_dir, write_entry
from trtbuild.backends.trt.profiles import config_profiles, profiles_from_corpus, varlen_shapes
from trtbuild.errors import TrtbuildError
from trtbuild.workdir import WorkDir, atomic_path, check_export, read_json, sha256_bytes, sha256_file

BUILD_ATTEMPTS = 2  # a build whose engine cannot create an execution context is tried once more (check_loadable)


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
# Build

@dataclass
class BuildResult(Result):
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

    def summary(self):
        return "{:<5} {}  {:.1f} MiB  {:.1f} s ({} timing cache)  layers {}".format(
            self.precision, self.engine, self.engine_bytes / (1 << 20), self.build_seconds,
            "warm" if self.timing_cache_warm else "cold",
            ", ".join("{} {}".format(k, v) for k, v in sorted(self.layers.items())) or "n/a")


class BuildReport(Result):
    """The engines one `trtbuild build` made (FP16, INT8 or both) and the manifest they are recorded in."""

    def __init__(self, results):
        self.results = list(results)

    def to_dict(self):
        return [r.to_dict() for r in self.results]

    def summary(self):
        return "\n".join([r.summary() for r in self.results] + ["manifest: {}".format(self.results[0].manifest)])


def build_engine(config, precision="fp16", profiles=None, progress=noop, verbose=False):
    """Build one engine for the live GPU; returns a BuildResult and updates the manifest."""
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
        "sha256": {"onnx": sha256_file(onnx_path), "engine": sha256_bytes(data)},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if precision == "int8" and os.path.isfile(wd.scales):
        entry["sha256"]["scales"] = sha256_file(wd.scales)
    if varlen:  # the engine's own inputs are the packed ones; runners pack [batch, seq] feeds (plugins.pack_varlen)
        from trtbuild.backends.trt.plugins import VARLEN_INPUTS

        entry["varlen"] = True
        entry["engine_inputs"] = list(VARLEN_INPUTS)
    if plugins:  # the checkpoint's weights, as the export recorded them
        entry["source"] = source_path
        entry["gelu"] = config.build.gelu_mode
        entry["sha256"]["weights"] = record.get("sha256", {}).get("weights/model.safetensors")
    manifest_path = write_entry(out_dir, "{}.engine".format(precision), entry)
    progress("built {} ({:.1f} MiB) in {:.1f} s".format(engine_path, len(data) / (1 << 20), seconds))
    return BuildResult(engine=engine_path, precision=precision, gpu=gpu["name"],
                       compute_capability=gpu["compute_capability"], tensorrt=trt.__version__,
                       profiles=[p.to_dict() for p in profiles], build_seconds=round(seconds, 2),
                       timing_cache_warm=warm, engine_bytes=len(data), onnx=onnx_path, manifest=manifest_path,
                       layers=layers)


def _plugin_network(trt, config, wd, record, precision, profiles, verbose):
    """(source path, (builder, network), keep-alive) for `build.backend: plugins` (trtbuild/plugins.py)."""
    from trtbuild.backends.trt.plugins import SAFETENSORS, layer_ranges, load_bert, plugin_network

    checkpoint = config.model.checkpoint or record.get("checkpoint")
    if not checkpoint:
        raise TrtbuildError("build.backend plugins reads the checkpoint's weights: set model.checkpoint")
    spec, weights = load_bert(checkpoint, record.get("sha256", {}).get("weights/" + SAFETENSORS))
    ranges = None
    if precision == "int8":
        if not os.path.isfile(wd.scales):
            raise TrtbuildError("{} has no scales.json; run `trtbuild calibrate` first".format(wd.root))
        ranges = layer_ranges(read_json(wd.scales), spec.layers)
    buckets = sorted({p.max[1] for p in profiles})
    logger = trt_logger(trt, verbose)
    builder = trt.Builder(logger)
    network, keep = plugin_network(trt, builder, spec, weights, record["inputs"], precision, buckets, ranges, logger,
                                   varlen=config.build.varlen, gelu_mode=config.build.gelu_mode)
    return os.path.join(checkpoint, SAFETENSORS), (builder, network), (keep, weights, builder)


def check_loadable(trt, data):
    """(layer counts, None) when TensorRT can deserialize the engine bytes and create an execution context, else
    ({}, why). TensorRT 8.6 can build multi-profile engines whose context creation fails (a Myelin 'missing offset in
    id2offset', NVIDIA/TensorRT#2977); a build must not hand such an engine on."""
    runtime = trt.Runtime(trt_logger(trt))
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


def build_engines(config, int8=False, profiles=None, progress=noop, verbose=False, fp16=True, profiles_from=None):
    """FP16 (unless `fp16` is False); INT8 too with `int8`. Returns a BuildReport. `profiles_from`: a corpus whose
    token lengths set the bucket profiles (`profiles_from_corpus`)."""
    if not fp16 and not int8:
        raise TrtbuildError("nothing to build: --no-fp16 needs --int8")
    if profiles_from:
        profiles = profiles_from_corpus(config, profiles_from, progress)
    results = [build_engine(config, "fp16", profiles, progress, verbose)] if fp16 else []
    if int8:
        results.append(build_engine(config, "int8", profiles, progress, verbose))
    return BuildReport(results)


