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

import numpy as np

from trtbuild import __version__
from trtbuild._util import Result, first_line, noop
from trtbuild.backends.trt import import_tensorrt, trt_logger
from trtbuild.backends.trt.cuda import gpu_info
from trtbuild.backends.trt.manifest import PRECISIONS, TIMING_CACHE, arch_dir, write_entry
from trtbuild.backends.trt.profiles import config_profiles, profiles_from_corpus, varlen_shapes
from trtbuild.errors import TrtbuildError
from trtbuild.workdir import WorkDir, atomic_path, check_calibration, check_export, locked, read_scales, remove, \
    sha256_file



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
        raise TrtbuildError("unknown precision {!r}; use fp16, int8 or fp8".format(precision))
    major = int(str(trt_version).split(".")[0])
    if precision == "fp8":  # E4M3 Q/DQ from `calibrate --precision fp8`, the float parts cast to FP16
        if major < 10:
            raise TrtbuildError("FP8 engines need TensorRT >= 10 on a GPU of SM >= 8.9; TensorRT {} has no FP8 "
                                "(`verify --candidate fp8` measures model.fp8.onnx's accuracy on the CPU)".format(
                                    trt_version))
        return BuildPath("fp8", "model.fp8.onnx", (), True, True)
    if major >= 11:  # no FP16/INT8 builder flags, no implicit INT8: types come from the network
        if precision == "fp16":
            return BuildPath("fp16", "model.onnx", (), True, True)
        return BuildPath("int8", "model.qdq.onnx", (), True, True)
    if precision == "fp16":
        return BuildPath("fp16", "model.onnx", ("FP16",), False, False)
    return BuildPath("int8", "model.qdq.onnx", ("FP16", "INT8"), False, False)


def _check_fp8_model(wd):
    if not os.path.isfile(wd.fp8_onnx):
        raise TrtbuildError("{} has no model.fp8.onnx; run `trtbuild calibrate {} --from-scales --precision fp8` "
                            "first".format(wd.root, wd.root))


def plugin_tactic_sources(trt):
    """The plugins backend's tactic sources: 8.6 as measured (cuBLAS and cuBLASLt: the plugins call them, and the
    cuDNN library is a stand-in on our GPU machine); from 10 every source the version has but cuDNN and the
    deprecated cuBLAS ones, i.e. the defaults without cuDNN."""
    members = trt.TacticSource.__members__
    if int(trt.__version__.split(".")[0]) < 10:
        return [trt.TacticSource.CUBLAS, trt.TacticSource.CUBLAS_LT]
    return [members[n] for n in sorted(members) if n not in ("CUDNN", "CUBLAS", "CUBLAS_LT")]


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


# one-plan: one engine holding every profile; one-plan-per-profile: a single-profile engine per profile. (Turning
# off the preview feature FASTER_DYNAMIC_SHAPES_0805 instead made TensorRT 8.6 fail to build BERT on the H200:
# "No supported formats for /inner/bert/Flatten", docs/results/gpu-tests-2026-12-01b-h200-trt8.6.0.log.)
RECIPES = ("one-plan", "one-plan-per-profile")


def build_engine(config, precision="fp16", profiles=None, progress=noop, verbose=False):
    """Build one engine for the live GPU; returns a BuildResult and updates the manifest.

    Every engine is run once on every profile in a child process before it is handed on (`selftest`): TensorRT
    8.6 builds multi-profile Myelin engines that crash on their second profile (on the H200 every one did,
    NVIDIA/TensorRT#2977). A failed self-test (or a failed build) tries the next recipe: one plan per profile, each
    a single-profile engine; the manifest entry lists the files and the runners pick the one a batch fits."""
    wd = WorkDir(config.workdir)
    with locked(wd.root, create=False):
        return _build_engine(config, wd, precision, profiles, progress, verbose)


def _build_engine(config, wd, precision, profiles, progress, verbose):
    record = check_export(wd.root)
    plugins = config.build.backend == "plugins"
    if precision in ("int8", "fp8"):  # (checked before TensorRT is imported: a CPU machine says so too)
        if not os.path.isfile(wd.calibrate_json) and not os.path.isfile(wd.qdq_onnx):
            raise TrtbuildError("{} has no calibration (model.qdq.onnx, scales.json); run `trtbuild calibrate {}` "
                                "first".format(wd.root, wd.root))
        if precision == "fp8":
            _check_fp8_model(wd)
        check_calibration(wd.root, record, fp8=precision == "fp8")
    trt = import_tensorrt()
    gpu = gpu_info()
    path = build_path(trt.__version__, precision)
    if precision == "fp8" and float(gpu["compute_capability"]) < 8.9:
        raise TrtbuildError("FP8 engines need a GPU of SM >= 8.9 (Ada, Hopper); this {} is SM {}: build int8".format(
            gpu["name"], gpu["compute_capability"]))
    onnx_path = wd.path(path.onnx)
    if path.cast_fp16 and plugins:
        raise TrtbuildError("the {} engine on TensorRT {} is a strongly typed network, which build.backend plugins "
                            "does not write; use build.backend onnx".format(precision.upper(), trt.__version__))
    profiles = profiles or config_profiles(config, record["max_length"])
    out_dir = arch_dir(wd.root, gpu["compute_capability"], trt.__version__)
    os.makedirs(out_dir, exist_ok=True)
    cast = None
    if path.cast_fp16:  # strongly typed: the network's FP16 comes from an FP16-cast ONNX (trtbuild/backends/fp16.py)
        from trtbuild.backends.fp16 import write_fp16_onnx

        cast_path = os.path.join(out_dir, path.onnx.replace(".onnx", ".fp16.onnx"))
        progress("casting {} to FP16 for a strongly typed build ({})".format(path.onnx, cast_path))
        write_fp16_onnx(onnx_path, cast_path)
        cast = {"file": os.path.basename(cast_path), "from": path.onnx, "sha256": sha256_file(cast_path)}
        onnx_path = cast_path
    cache_path = os.path.join(out_dir, TIMING_CACHE)
    warm = warm_at_start = os.path.isfile(cache_path)

    source = path.onnx if not plugins else "the checkpoint with TensorRT's BERT plugins{}".format(
        " (variable length)" if config.build.varlen else "")
    progress("building {} engine for {} (sm {}, TensorRT {}) from {}, {} profile(s), timing cache {}".format(
        precision.upper(), gpu["name"], gpu["compute_capability"], trt.__version__, source, len(profiles),
        "warm" if warm else "cold"))
    varlen = config.build.varlen  # (the config allows it with plugins only)
    extra, source_path, keep = {}, onnx_path, None
    if plugins:  # as demo/BERT: no cuDNN tactics (its library is a stand-in here); the FP32 classifier head and
        # the FP16 outputs of the INT8 GEMMs are precision requests the builder should follow where it can
        extra = dict(tactic_sources=plugin_tactic_sources(trt), precision_constraints="prefer")
        source_path, network, keep = _plugin_network(trt, config, wd, record, precision, profiles, verbose)
    else:
        from polygraphy.backend.trt import NetworkFromOnnxPath

        network = NetworkFromOnnxPath(onnx_path, strongly_typed=path.strongly_typed or None)
    name = "{}.engine".format(precision)
    recipes = RECIPES if len(profiles) > 1 else RECIPES[:1]
    tried, start = [], time.perf_counter()
    for attempt, recipe in enumerate(recipes):
        groups = [[i] for i in range(len(profiles))] if recipe == "one-plan-per-profile" else [list(range(len(profiles)))]
        try:
            plans = [_build_plan(trt, config, network, path, [profiles[i] for i in group], varlen, record, extra,
                                 cache_path, warm and attempt == 0, precision) for group in groups]
        except Exception as e:  # TensorRT (through Polygraphy) failed to build this recipe: the next one may build
            if attempt + 1 == len(recipes):
                raise TrtbuildError("TensorRT {} failed to build the {} engine ({}); run with --verbose for its "
                                    "log".format(trt.__version__, precision, first_line(e))) from None
            tried.append({"recipe": recipe, "passed": False, "why": "did not build: " + first_line(e)})
            progress("TensorRT could not build the {} engine as {} ({}); trying the next recipe".format(
                precision, recipe, first_line(e)))
            continue
        files = _stage_plans(out_dir, precision, plans)
        report = selftest([t for t, _ in files], [[profiles[i].to_dict() for i in g] for g in groups], varlen,
                          record["vocab_size"])
        tried.append({"recipe": recipe, "passed": report["passed"], "why": report.get("why")})
        if report["passed"]:
            for tmp, final in files:  # only a tested engine takes the engine's name
                os.replace(tmp, final)
            files = [(final, None) for _, final in files]
            break
        for tmp, _ in files:
            remove(tmp)
        progress("TensorRT built a {} engine ({}) that fails on its profiles ({}); trying the next recipe".format(
            precision, recipe, report.get("why")))
    else:
        raise TrtbuildError("TensorRT {} built no {} engine whose every profile runs ({}); use build.backend plugins "
                            "with build.varlen (one profile), or fewer data.buckets".format(
                                trt.__version__, precision, "; ".join("{}: {}".format(t["recipe"], t["why"])
                                                                      for t in tried)))
    seconds = time.perf_counter() - start
    del keep  # the weights TensorRT read from numpy while building
    warm = warm and len(tried) == 1
    engine_path = os.path.join(out_dir, name)
    parts = [{"file": os.path.basename(f), "profiles": g, "bytes": os.path.getsize(f), "sha256": sha256_file(f)}
             for (f, _), g in zip(files, groups)]
    total = sum(p["bytes"] for p in parts)
    entry = {
        "precision": precision, "gpu": gpu["name"], "compute_capability": gpu["compute_capability"],
        "driver": gpu.get("driver"), "cuda_runtime": gpu.get("cuda_runtime"), "tensorrt": trt.__version__,
        "trtbuild": __version__, "onnx": path.onnx, "backend": config.build.backend, "inputs": record["inputs"],
        "profiles": [p.to_dict() for p in profiles], "build_seconds": round(seconds, 2), "timing_cache_warm": warm,
        "timing_cache_offered": os.path.isfile(cache_path) and warm_at_start,
        "engine_bytes": parts[0]["bytes"], "total_bytes": total, "layers": report.get("layers", {}),
        "build_attempts": len(tried), "recipe": tried[-1]["recipe"], "recipes_tried": tried, "selftest": report,
        "builder": {"flags": list(path.flags), "strongly_typed": path.strongly_typed,
                    "workspace_mib": config.build.workspace_mib,
                    "optimization_level": config.build.optimization_level},
        "sha256": {"onnx": sha256_file(wd.path(path.onnx)) if os.path.isfile(wd.path(path.onnx)) else None,
                   "engine": parts[0]["sha256"]},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if len(parts) > 1:
        entry["files"] = parts
    if cast is not None:  # the FP16-cast ONNX the strongly typed network was parsed from
        entry["fp16_cast"] = cast
    if precision in ("int8", "fp8") and os.path.isfile(wd.scales):
        entry["sha256"]["scales"] = sha256_file(wd.scales)
    if varlen:  # the engine's own inputs are the packed ones; runners pack [batch, seq] feeds (plugins.pack_varlen)
        from trtbuild.backends.trt.plugins import VARLEN_INPUTS

        entry["varlen"] = True
        entry["engine_inputs"] = list(VARLEN_INPUTS)
    if plugins:  # the checkpoint's weights, as the export recorded them
        entry["source"] = source_path
        entry["gelu"] = config.build.gelu_mode
        if precision == "int8":
            entry["int8_scope"] = config.build.int8_scope_mode
        entry["sha256"]["weights"] = record.get("sha256", {}).get("weights/model.safetensors")
    manifest_path = write_entry(out_dir, name, entry)
    _remove_stale_parts(out_dir, precision, [p["file"] for p in parts])
    progress("built {} ({:.1f} MiB{}) in {:.1f} s, every profile tested".format(
        engine_path, total / (1 << 20), ", {} plans".format(len(parts)) if len(parts) > 1 else "", seconds))
    return BuildResult(engine=engine_path, precision=precision, gpu=gpu["name"],
                       compute_capability=gpu["compute_capability"], tensorrt=trt.__version__,
                       profiles=[p.to_dict() for p in profiles], build_seconds=round(seconds, 2),
                       timing_cache_warm=warm, engine_bytes=total, onnx=onnx_path, manifest=manifest_path,
                       layers=report.get("layers", {}))


def _build_plan(trt, config, network, path, profiles, varlen, record, extra, cache_path, load_cache, precision):
    """Engine bytes of one plan holding `profiles`, through Polygraphy; the timing cache loaded and saved."""
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, Profile

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
    create = CreateConfig(
        fp16="FP16" in path.flags, int8="INT8" in path.flags, profiles=trt_profiles, **extra,
        load_timing_cache=cache_path if load_cache else None,
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: config.build.workspace_mib << 20},
        builder_optimization_level=config.build.optimization_level,
        profiling_verbosity=trt.ProfilingVerbosity.DETAILED)
    with atomic_path(cache_path) as tmp_cache:
        # Polygraphy merges into an existing file at the save path; the temp name must not exist yet
        # (the loaded cache is already in the builder's config, so the saved one holds old + new).
        os.remove(tmp_cache)
        engine_bytes = EngineBytesFromNetwork(network, config=create, save_timing_cache=tmp_cache)()
    if engine_bytes is None:
        raise TrtbuildError("TensorRT failed to build the {} engine (run with --verbose for the log)".format(precision))
    return bytes(engine_bytes)


def _stage_plans(out_dir, precision, plans):
    """[(temp file, final file)]: each plan written under a hidden temp name until its self-test passes; the final
    names are <precision>.engine, then <precision>.p<k>.engine for more plans."""
    files = []
    for k, data in enumerate(plans):
        name = "{}.engine".format(precision) if k == 0 else "{}.p{}.engine".format(precision, k)
        tmp = os.path.join(out_dir, ".{}.untested.tmp".format(name))
        with atomic_path(tmp) as staging:
            with open(staging, "wb") as f:
                f.write(data)
        files.append((tmp, os.path.join(out_dir, name)))
    return files


def _remove_stale_parts(out_dir, precision, keep):
    for name in os.listdir(out_dir):
        if name.startswith(precision + ".p") and name.endswith(".engine") and name not in keep:
            remove(os.path.join(out_dir, name))


def selftest(files, profiles, varlen, vocab_size):
    """Run each plan once on each of its profiles (and back to the first) in a child process; {"passed", "why",
    "layers", "runs"}. A crash of the child is a failed test, not a crash of the build."""
    from trtbuild.backends.trt.isolated import EngineCrashError, call

    try:
        return call(_selftest, files, profiles, varlen, vocab_size, what="testing the new engine's profiles",
                    timeout=600)
    except EngineCrashError as e:
        return {"passed": False, "why": str(e).split(";")[0]}
    except TrtbuildError as e:
        return {"passed": False, "why": str(e)}


def _selftest(files, profiles, varlen, vocab_size):
    """(In the child.) Deserialize each plan, run every profile at its max batch, and the first again."""
    from polygraphy.backend.trt import TrtRunner as _PolyRunner

    from trtbuild.backends.trt.engine import Part
    from trtbuild.backends.trt.inspect import layer_precisions

    trt = import_tensorrt()
    runs, layers = 0, {}
    for path, group in zip(files, profiles):
        part = Part(trt, path, range(len(group)))
        counts = layer_precisions(trt, part.engine)
        for k, v in counts.items():
            layers[k] = layers.get(k, 0) + v
        names = [part.engine.get_tensor_name(i) for i in range(part.engine.num_io_tensors)]
        inputs = [n for n in names if part.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        with _PolyRunner(part.context) as runner:
            for index in list(range(len(group))) + [0]:
                if index != part.current:
                    runner.set_profile(index)
                    part.current = index
                batch, seq = group[index]["max"]
                feeds = _test_feeds(inputs, batch, seq, varlen, vocab_size)
                out = runner.infer({n: feeds[n].astype(trt.nptype(part.engine.get_tensor_dtype(n))) for n in inputs})
                logits = np.asarray(out["logits"])
                if not np.isfinite(logits).all():
                    return {"passed": False, "why": "{} profile {} returns non-finite logits".format(
                        os.path.basename(path), index)}
                runs += 1
    return {"passed": True, "runs": runs, "layers": layers}


def _test_feeds(inputs, batch, seq, varlen, vocab_size):
    rng = np.random.default_rng(batch * 1000 + seq)
    ids = rng.integers(1, max(2, min(vocab_size, 1000)), size=(batch, seq))
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    if varlen:
        from trtbuild.backends.trt.plugins import pack_varlen

        return pack_varlen(feeds, max_batch=batch, max_len=seq)
    return feeds


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
        ranges = layer_ranges(read_scales(wd, record), spec.layers)
    buckets = sorted({p.max[1] for p in profiles})
    if ranges and config.build.int8_scope_mode != "gemm" and config.export.attn_implementation == "sdpa":
        raise TrtbuildError("build.int8_scope {} takes the Q/K/V range at the attention MatMuls, where an sdpa export "
                            "has Q and K pre-scaled by head_size^-1/4: export with export.attn_implementation: eager "
                            "or use int8_scope gemm".format(config.build.int8_scope_mode))
    logger = trt_logger(trt, verbose)
    builder = trt.Builder(logger)
    network, keep = plugin_network(trt, builder, spec, weights, record["inputs"], precision, buckets, ranges, logger,
                                   varlen=config.build.varlen, gelu_mode=config.build.gelu_mode,
                                   int8_scope=config.build.int8_scope_mode)
    return os.path.join(checkpoint, SAFETENSORS), (builder, network), (keep, weights, builder)


def build_engines(config, int8=False, profiles=None, progress=noop, verbose=False, fp16=True, profiles_from=None,
                  fp8=False):
    """FP16 (unless `fp16` is False); INT8 too with `int8`, FP8 with `fp8` (TensorRT >= 10, SM >= 8.9). Returns a
    BuildReport. `profiles_from`: a corpus whose token lengths set the bucket profiles (`profiles_from_corpus`)."""
    if not fp16 and not int8 and not fp8:
        raise TrtbuildError("nothing to build: --no-fp16 needs --int8 or --fp8")
    if fp8:  # before any engine is built, as for INT8 below
        _check_fp8_model(WorkDir(config.workdir))
        check_calibration(config.workdir, check_export(config.workdir), fp8=True)
    if int8:  # before any engine is built: a long FP16 build must not end in "calibrate first"
        record = check_export(config.workdir)
        if not os.path.isfile(WorkDir(config.workdir).calibrate_json):
            raise TrtbuildError("{} has no calibration (model.qdq.onnx, scales.json); run `trtbuild calibrate {}` "
                                "first".format(config.workdir, config.workdir))
        check_calibration(config.workdir, record)
    if profiles_from:
        profiles = profiles_from_corpus(config, profiles_from, progress)
    results = [build_engine(config, "fp16", profiles, progress, verbose)] if fp16 else []
    if int8:
        results.append(build_engine(config, "int8", profiles, progress, verbose))
    if fp8:
        results.append(build_engine(config, "fp8", profiles, progress, verbose))
    return BuildReport(results)


