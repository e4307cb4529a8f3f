"""Model configs: one YAML per model in `configs/`, validated into frozen dataclasses.

Every value is checked on load; an unknown key or a bad value is rejected with its key path,
e.g. `build.profiles[2].max: must be >= opt (got [64, 128] < [64, 256])`. Relative paths in a
config are relative to the directory trtbuild runs in (the project root).

Style follows Optimum's configuration dataclasses: validation lives in `__post_init__`.
"""

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from trtbuild.errors import ConfigError, TrtbuildError

DEFAULT_BUCKETS = (32, 64, 128, 256)  # token lengths a batch is padded to (data.buckets)
METHODS = ("entropy", "minmax", "percentile")  # calibrate.method: how an activation's amax is chosen
TRT_BACKENDS = ("trt-fp16", "trt-int8")
# torch.compile in its three modes: default, "reduce-overhead" (CUDA graphs), "max-autotune" (GEMM autotuning + CUDA
# graphs); the engines' ratios are taken against the fastest torch FP16 backend at each shape
TORCH_COMPILE_MODES = {"torch-compile-fp16": "default", "torch-compile-reduce-overhead-fp16": "reduce-overhead",
                       "torch-compile-max-autotune-fp16": "max-autotune"}
TORCH_BACKENDS = ("torch-fp32", "torch-fp16") + tuple(TORCH_COMPILE_MODES)
BACKENDS = TRT_BACKENDS + TORCH_BACKENDS + ("ort-cpu",)  # what `trtbuild bench` measures
# the encoder's shape, recorded by export (export.json `model_shape`) for bench's FLOPs per sequence
MODEL_SHAPE_KEYS = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads")
BUILD_BACKENDS = ("onnx", "plugins")  # build.backend: how the network is defined
MAX_SEQUENCE = 8192  # no BERT takes more tokens; a bound on every sequence length a config or option names
MAX_BENCH_BATCH = 4096  # the largest batch bench times
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _check(ok, key, reason):
    if not ok:
        raise ConfigError(key, reason)


def _at_most(obj, key, limit, why):
    """Upper bounds keep a typo from taking the machine with it; the message says why the bound is there."""
    value = getattr(obj, key)
    values = value if isinstance(value, tuple) else (value,)
    for i, v in enumerate(values):
        if v is not None and v > limit:
            where = "{}[{}]".format(key, i) if isinstance(value, tuple) else key
            raise ConfigError(where, "must be <= {:,} ({}; got {:,})".format(limit, why, v))


def _one_of(names):
    """("a", "b", "c") -> "a, b or c"."""
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def clip_buckets(buckets, max_length):
    """The length buckets an export of `max_length` tokens can take, ascending: those <= max_length, or
    [max_length] when none is (a model exported shorter than every bucket)."""
    kept = sorted(b for b in buckets if max_length is None or b <= max_length)
    return kept or [max_length]


@dataclass(frozen=True)
class ModelConfig:
    """Which model: a name (used for the work directory), the checkpoint, where outputs go."""

    name: str
    checkpoint: Optional[str] = None  # a local Hugging Face checkpoint directory
    workdir: Optional[str] = None  # default: out/<name>
    description: str = ""

    def __post_init__(self):
        _check(bool(_NAME_RE.match(self.name)), "name",
               "must be letters, digits, '.', '_' or '-' (got {!r})".format(self.name))

    @property
    def resolved_workdir(self):
        return self.workdir or os.path.join("out", self.name)


@dataclass(frozen=True)
class ExportConfig:
    """`trtbuild export`: ONNX opset, sequence limits, and the PyTorch parity check."""

    opset: int = 17
    max_length: Optional[int] = None  # default: min(256, the model's max_position_embeddings)
    tolerance: float = 1e-4  # max |logit difference| ONNX Runtime vs PyTorch, per validated shape
    validate_batches: Tuple[int, ...] = (1, 7)
    short_length: int = 8  # validated sequence lengths: this one and max_length
    attn_implementation: str = "eager"  # the attention code traced into the ONNX: eager or sdpa
    inputs: Optional[Tuple[str, ...]] = None  # default: the tokenizer's model inputs
    # attention mask in the graph: "model" traces the model's own mask code (transformers 5 builds a
    # [batch, 1, seq, seq] mask from And/Expand/Where with finfo.min); "additive" feeds it the classic
    # [batch, 1, 1, seq] additive mask (1 - mask) * -10000, finite in FP16 (same logits)
    mask: str = "model"

    def __post_init__(self):
        _check(13 <= self.opset <= 21, "opset", "must be between 13 and 21 (got {})".format(self.opset))
        if self.max_length is not None:
            _check(self.max_length >= 2, "max_length", "must be >= 2 (got {})".format(self.max_length))
        _check(self.tolerance > 0, "tolerance", "must be > 0 (got {})".format(self.tolerance))
        _check(len(self.validate_batches) > 0, "validate_batches", "must list at least one batch size")
        for i, b in enumerate(self.validate_batches):
            _check(b >= 1, "validate_batches[{}]".format(i), "must be >= 1 (got {})".format(b))
        _check(self.short_length >= 2, "short_length", "must be >= 2 (got {})".format(self.short_length))
        _check(self.mask in ("model", "additive"), "mask", "must be 'model' or 'additive' (got {!r})".format(self.mask))
        _check(self.attn_implementation in ("eager", "sdpa"), "attn_implementation",
               "must be 'eager' or 'sdpa' (got {!r})".format(self.attn_implementation))
        if self.inputs is not None:
            allowed = ("input_ids", "attention_mask", "token_type_ids")
            for i, name in enumerate(self.inputs):
                _check(name in allowed, "inputs[{}]".format(i),
                       "must be one of {} (got {!r})".format(", ".join(allowed), name))
            _check("input_ids" in self.inputs, "inputs", "must include input_ids")
        _at_most(self, "max_length", MAX_SEQUENCE, "BERT position embeddings stop far below it")
        _at_most(self, "validate_batches", 256, "the parity check runs each batch on the CPU at max_length")
        _at_most(self, "short_length", MAX_SEQUENCE, "BERT position embeddings stop far below it")


@dataclass(frozen=True)
class DataConfig:
    """Corpora and length buckets shared by calibrate, build, verify and bench."""

    buckets: Tuple[int, ...] = DEFAULT_BUCKETS
    calibration: Tuple[str, ...] = ()  # corpus files (txt / jsonl / csv / parquet)
    eval: Tuple[str, ...] = ()  # labelled eval files
    lexicon: Optional[str] = None  # slang lexicon for the coverage report
    text_column: str = "text"
    label_column: str = "label"

    def usable_buckets(self, max_length):
        """These buckets clipped to an export's max_length (`clip_buckets`)."""
        return clip_buckets(self.buckets, max_length)

    def __post_init__(self):
        _check(len(self.buckets) > 0, "buckets", "must list at least one sequence length")
        for i, b in enumerate(self.buckets):
            _check(b >= 2, "buckets[{}]".format(i), "must be >= 2 (got {})".format(b))
            if i:
                _check(b <= MAX_SEQUENCE, "buckets[{}]".format(i), "must be <= {:,} (BERT position embeddings stop far "
                       "below it; got {:,})".format(MAX_SEQUENCE, b))
                _check(b > self.buckets[i - 1], "buckets[{}]".format(i),
                       "must be > buckets[{}] (buckets ascend; got {} after {})".format(i - 1, b, self.buckets[i - 1]))


@dataclass(frozen=True)
class CalibrateConfig:
    """`trtbuild calibrate`: statistics, scales, Q/DQ placement and the coverage gate."""

    method: str = "entropy"  # entropy | minmax | percentile
    percentile: float = 99.99
    num_bins: int = 2048
    batch_size: int = 16
    max_texts: Optional[int] = None  # a seeded random sample of this many texts
    sample_seed: int = 0
    exclude: Tuple[str, ...] = ()  # node-name patterns (fnmatch) kept in float
    quantize_residual: bool = False  # measured: -20 pt accuracy on the default model with entropy
    quantize_attention: bool = True  # Q/DQ on both inputs of Q.K^T and P.V: INT8 5.6 -> 4.0 ms (perf-log.md)
    min_slang_coverage: Optional[float] = None  # gate: share of the eval set's slang the corpus covers
    on_bad_utf8: str = "skip"  # skip | fail
    trt_cache: bool = False  # also write a TensorRT <= 10 calibration cache
    precision: str = "int8"  # fp8: also model.fp8.onnx, the same scales as FP8 E4M3 Q/DQ (TensorRT >= 10, SM >= 8.9)
    # equalization (SmoothQuant) of every GEMM input, exact in FP32 (calibrate/equalize.py, README "Calibrate")
    equalize: bool = True
    smooth_alpha: Optional[float] = None  # one alpha for every GEMM input; None: searched per tensor (smooth_alphas)
    smooth_alphas: Tuple[float, ...] = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    sample_rows: int = 512  # token rows kept per GEMM input for the alpha search
    # choices are made on this share of the calibration corpus, held out of the statistics, never on the eval set
    holdout: float = 0.2
    sensitivity: bool = True  # per-class runs on the held-out texts for sensitivity.json/.html (~6 model runs)
    auto_fallback: bool = True  # held-out flips above the target: the most sensitive GEMM inputs go back to float
    fallback_max_layers: int = 8  # at most this many quantized tensors go back to float
    fallback_target: Optional[float] = None  # held-out flip rate to reach; None: 80 % of verify.max_flip_rate

    def __post_init__(self):
        _check(self.method in METHODS, "method", "must be {} (got {!r})".format(_one_of(METHODS), self.method))
        _check(self.precision in CALIBRATE_PRECISIONS, "precision",
               "must be {} (got {!r})".format(_one_of(CALIBRATE_PRECISIONS), self.precision))
        _check(50.0 < self.percentile <= 100.0, "percentile", "must be in (50, 100] (got {})".format(self.percentile))
        _check(self.num_bins >= 128 and self.num_bins % 128 == 0, "num_bins",
               "must be a multiple of 128, at least 128 (got {})".format(self.num_bins))
        _check(self.batch_size >= 1, "batch_size", "must be >= 1 (got {})".format(self.batch_size))
        _at_most(self, "num_bins", 65536, "the entropy search is quadratic in the bins; 2,048 is TensorRT's")
        _at_most(self, "batch_size", 4096, "one ONNX Runtime batch holds every activation of every text")
        _at_most(self, "max_texts", 1000000, "statistics settle long before; calibration is linear in texts")
        _at_most(self, "fallback_max_layers", 1000, "a BERT has a few hundred quantized nodes at most")
        _at_most(self, "sample_rows", 65536, "the alpha search multiplies them by every GEMM weight")
        if self.max_texts is not None:
            _check(self.max_texts >= 1, "max_texts", "must be >= 1 (got {})".format(self.max_texts))
        if self.min_slang_coverage is not None:
            _check(0.0 <= self.min_slang_coverage <= 1.0, "min_slang_coverage",
                   "must be between 0 and 1 (got {})".format(self.min_slang_coverage))
        _check(self.fallback_max_layers >= 1, "fallback_max_layers", "must be >= 1 (got {})".format(self.fallback_max_layers))
        if self.smooth_alpha is not None:
            _check(0.0 <= self.smooth_alpha <= 1.0, "smooth_alpha", "must be between 0 and 1 (got {})".format(
                self.smooth_alpha))
        _check(len(self.smooth_alphas) >= 1 and all(0.0 <= a <= 1.0 for a in self.smooth_alphas), "smooth_alphas",
               "must be a non-empty list of values between 0 and 1 (got {})".format(list(self.smooth_alphas)))
        _check(self.sample_rows >= 16, "sample_rows", "must be >= 16 (got {})".format(self.sample_rows))
        _check(0.0 <= self.holdout < 0.9, "holdout", "must be in [0, 0.9) (got {})".format(self.holdout))
        if self.fallback_target is not None:
            _check(0.0 <= self.fallback_target <= 1.0, "fallback_target",
                   "must be between 0 and 1 (got {})".format(self.fallback_target))
        _check(self.on_bad_utf8 in ("skip", "fail"), "on_bad_utf8",
               "must be 'skip' or 'fail' (got {!r})".format(self.on_bad_utf8))


@dataclass(frozen=True)
class ProfileConfig:
    """One TensorRT optimization profile: min / opt / max shapes as [batch, sequence]."""

    min: Tuple[int, int]
    opt: Tuple[int, int]
    max: Tuple[int, int]

    def to_dict(self):
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    def __post_init__(self):
        for key in ("min", "opt", "max"):
            shape = getattr(self, key)
            _check(all(v >= 1 for v in shape), key, "every dimension must be >= 1 (got {})".format(list(shape)))
        _check(all(o >= m for o, m in zip(self.opt, self.min)), "opt",
               "must be >= min (got {} < {})".format(list(self.opt), list(self.min)))
        _check(all(x >= o for x, o in zip(self.max, self.opt)), "max",
               "must be >= opt (got {} < {})".format(list(self.max), list(self.opt)))


GELU_MODES = ("model", "tanh", "plugin")  # build.gelu (plugins backend; trtbuild/plugins.py writes them)
DEFAULT_GELU = "tanh"
CALIBRATE_PRECISIONS = ("int8", "fp8")  # calibrate.precision: fp8 writes model.fp8.onnx beside model.qdq.onnx
INT8_SCOPES = ("gemm", "attention", "full")  # build.int8_scope (plugins + varlen): what runs in INT8 beyond the GEMMs
DEFAULT_INT8_SCOPE = "gemm"


@dataclass(frozen=True)
class BuildConfig:
    """`trtbuild build`: engine shapes and builder settings."""

    max_batch: int = 64
    opt_batch: Optional[int] = None  # the batch TensorRT optimizes each bucket profile for; default max_batch
    profiles: Tuple[ProfileConfig, ...] = ()  # empty: one profile per data bucket
    workspace_mib: int = 4096
    optimization_level: Optional[int] = None  # builder optimization level 0-5; default TensorRT's (3)
    # bucket profiles with the sequence fixed at the bucket length (inputs padded to it) instead of the
    # range (previous bucket, bucket]: TensorRT 8.6 runs BERT-base 25 % faster (docs/results/perf-log.md)
    fixed_sequence: bool = True
    # batch sizes that also get a fully static (batch, bucket) profile per bucket, used for exactly that batch
    # (e.g. [64] for a server that mostly runs full batches); each costs about one more profile of build time
    static_batches: Tuple[int, ...] = ()
    # onnx: TensorRT's ONNX parser on model.onnx / model.qdq.onnx; plugins: the encoder written with TensorRT's
    # BERT plugins (fused attention, skip-LayerNorm) from the checkpoint's weights (trtbuild/plugins.py)
    backend: str = "onnx"
    # plugins only: the variable-length plugins on packed batches (no padding; one profile for every length up
    # to the largest bucket, at most 384); the runners pack [batch, seq] inputs (trtbuild/plugins.py)
    varlen: bool = False
    # plugins only: the FFN's GELU (default tanh). tanh: the tanh approximation (as NVIDIA's BERT demo), whose
    # fused FFN-in GEMM runs BERT-base 12 % faster than with erf (3.24 vs 3.69 ms at B64 S128 on the H100) for
    # -0.08 pt macro-F1 on the default model (docs/results/perf-log.md, p8); model: the checkpoint's own (exact
    # erf for hidden_act gelu); plugin: TensorRT's GELU plugin (tanh), a kernel of its own after the GEMM
    gelu: Optional[str] = None
    # plugins + varlen, INT8 engine: what runs in INT8 besides the GEMMs. gemm: attention and skip-LayerNorm stay
    # FP16 (the GEMMs write FP16); attention: + the fused INT8 attention plugin (needs calibrate.quantize_attention);
    # full: + INT8 skip-LayerNorm and GEMM outputs, the residual stream in INT8 (NVIDIA's MLPerf recipe; needs
    # calibrate.quantize_residual for the ranges of the dense outputs). The last layer's skip-LayerNorm stays FP16.
    int8_scope: Optional[str] = None

    @property
    def gelu_mode(self):
        """The GELU the plugins backend writes: build.gelu, tanh when unset."""
        return self.gelu or DEFAULT_GELU

    @property
    def int8_scope_mode(self):
        """What the plugins backend's INT8 engine runs in INT8: build.int8_scope, gemm when unset."""
        return self.int8_scope or DEFAULT_INT8_SCOPE

    def __post_init__(self):
        _check(self.max_batch >= 1, "max_batch", "must be >= 1 (got {})".format(self.max_batch))
        _check(self.backend in BUILD_BACKENDS, "backend",
               "must be {} (got {!r})".format(_one_of(BUILD_BACKENDS), self.backend))
        _check(not self.varlen or self.backend == "plugins", "varlen",
               "needs backend: plugins (the variable-length BERT plugins)")
        if self.gelu is not None:
            _check(self.gelu in GELU_MODES, "gelu", "must be {} (got {!r})".format(_one_of(GELU_MODES), self.gelu))
            _check(self.backend == "plugins", "gelu",
                   "needs backend: plugins (the ONNX backend runs the model's own GELU)")
        if self.int8_scope is not None:
            _check(self.int8_scope in INT8_SCOPES, "int8_scope",
                   "must be {} (got {!r})".format(_one_of(INT8_SCOPES), self.int8_scope))
            _check(self.varlen or self.int8_scope == "gemm", "int8_scope",
                   "{} needs backend: plugins with varlen: true (the variable-length INT8 plugins)".format(
                       self.int8_scope))
        _check(not (self.varlen and (self.profiles or self.static_batches)), "varlen",
               "takes no profiles or static_batches: its one profile covers every batch and length")
        if self.opt_batch is not None:
            _check(1 <= self.opt_batch <= self.max_batch, "opt_batch",
                   "must be between 1 and max_batch {} (got {})".format(self.max_batch, self.opt_batch))
        if self.optimization_level is not None:
            _check(0 <= self.optimization_level <= 5, "optimization_level",
                   "must be between 0 and 5 (got {})".format(self.optimization_level))
        _check(self.workspace_mib >= 16, "workspace_mib", "must be >= 16 (got {})".format(self.workspace_mib))
        _at_most(self, "max_batch", 4096, "a profile's max batch sizes the engine's activation memory")
        _at_most(self, "workspace_mib", 1 << 20, "1 TiB is beyond any GPU")
        for i, n in enumerate(self.static_batches):
            _check(1 <= n <= self.max_batch, "static_batches[{}]".format(i),
                   "must be between 1 and max_batch {} (got {})".format(self.max_batch, n))
        for i, p in enumerate(self.profiles):
            _check(p.max[0] <= self.max_batch, "profiles[{}].max".format(i),
                   "batch {} exceeds build.max_batch {}".format(p.max[0], self.max_batch))


@dataclass(frozen=True)
class VerifyConfig:
    """`trtbuild verify`: the accuracy gate against the ONNX Runtime FP32 baseline (drops in points)."""

    max_f1_drop: float = 0.8  # overall macro-F1 drop, points (the field's bar)
    max_flip_rate: float = 0.01  # share of texts whose argmax changes
    max_slice_f1_drop: float = 2.0  # per slice, for slices with at least min_slice_texts texts
    min_slice_texts: int = 30
    bootstrap: int = 1000  # paired bootstrap resamples for the 95 % intervals (0: none)
    seed: int = 0
    batch_size: int = 32
    worst_slices: int = 5  # slices listed with example flips
    examples: int = 3  # flipped example texts per listed slice

    def __post_init__(self):
        for key in ("max_f1_drop", "max_slice_f1_drop"):
            _check(getattr(self, key) >= 0, key, "must be >= 0 points (got {})".format(getattr(self, key)))
        _check(0.0 <= self.max_flip_rate <= 1.0, "max_flip_rate",
               "must be between 0 and 1 (got {})".format(self.max_flip_rate))
        for key in ("min_slice_texts", "batch_size"):
            _check(getattr(self, key) >= 1, key, "must be >= 1 (got {})".format(getattr(self, key)))
        for key in ("bootstrap", "worst_slices", "examples"):
            _check(getattr(self, key) >= 0, key, "must be >= 0 (got {})".format(getattr(self, key)))
        _at_most(self, "bootstrap", 100000, "each resample holds an index per text; 1,000 already fixes the 95 % CI")
        _at_most(self, "batch_size", 1024, "one batch is held on the device at the bucket length")
        _at_most(self, "worst_slices", 1000, "the report lists them all")
        _at_most(self, "examples", 1000, "the report lists them all")


@dataclass(frozen=True)
class SimulateConfig:
    """The seed's dynamic batching (`trtbuild bench`): Poisson arrivals, one queue per length bucket."""

    rate: float = 8000.0  # texts/s offered in the detailed run (the seed's peak)
    requests: int = 20000  # requests per simulated run
    window_ms: float = 50.0  # the seed's window: the latency budget a request must meet at P99
    timeout_ms: float = 20.0  # a bucket short of min_batch is dispatched once its oldest waited this long
    min_batch: int = 8  # a bucket with this many requests goes as soon as the GPU is free
    max_batch: int = 64
    batch_sizes: Tuple[int, ...] = (1, 2, 4, 8, 16, 32, 48, 64)  # the measured service-time table
    seed: int = 0

    def __post_init__(self):
        _check(self.rate > 0, "rate", "must be > 0 texts/s (got {})".format(self.rate))
        _check(self.requests >= 100, "requests", "must be >= 100 (got {})".format(self.requests))
        _at_most(self, "rate", 1e7, "ten million texts/s is far beyond one GPU")
        _at_most(self, "requests", 10000000, "the simulation keeps every request's latency")
        _at_most(self, "window_ms", 3600000, "an hour")
        _at_most(self, "timeout_ms", 3600000, "an hour")
        _at_most(self, "max_batch", 4096, "a batch is timed on the engine")
        _at_most(self, "batch_sizes", 4096, "a batch is timed on the engine")
        for key in ("window_ms", "timeout_ms"):
            _check(getattr(self, key) > 0, key, "must be > 0 ms (got {})".format(getattr(self, key)))
        _check(1 <= self.min_batch <= self.max_batch, "min_batch",
               "must be between 1 and max_batch {} (got {})".format(self.max_batch, self.min_batch))
        _check(bool(self.batch_sizes) and all(b >= 1 for b in self.batch_sizes), "batch_sizes",
               "must be a list of batch sizes >= 1")
        _check(max(self.batch_sizes) >= self.max_batch, "batch_sizes",
               "must reach max_batch {} (largest is {})".format(self.max_batch, max(self.batch_sizes)))


@dataclass(frozen=True)
class BenchConfig:
    """`trtbuild bench`: which backends, at which (batch, sequence) shapes, how long."""

    shapes: Tuple[Tuple[int, int], ...] = ((1, 128), (8, 64), (64, 128))
    backends: Tuple[str, ...] = BACKENDS
    warmup: int = 20
    iterations: int = 100  # timed iterations per repeat
    repeats: int = 3  # the reported time is the median of the repeats' medians
    ort_iterations: int = 3  # ONNX Runtime on the CPU is slow: fewer iterations, one repeat
    torch_python: Optional[str] = None  # interpreter with torch + CUDA (default: /opt/torch/.venv/bin/python or this one)
    torch_timeout_s: int = 900
    cuda_graph: bool = True  # replay each TensorRT shape as a CUDA graph (device, e2e and the simulation)
    simulate: SimulateConfig = field(default_factory=SimulateConfig)

    def __post_init__(self):
        _check(bool(self.shapes), "shapes", "must name at least one [batch, sequence] shape")
        for i, (b, s) in enumerate(self.shapes):
            _check(b >= 1 and s >= 1, "shapes[{}]".format(i), "batch and sequence must be >= 1 (got {})".format([b, s]))
        for i, name in enumerate(self.backends):
            _check(name in BACKENDS, "backends[{}]".format(i),
                   "unknown backend {!r} (known: {})".format(name, ", ".join(BACKENDS)))
        for key in ("iterations", "repeats", "ort_iterations", "torch_timeout_s"):
            _check(getattr(self, key) >= 1, key, "must be >= 1 (got {})".format(getattr(self, key)))
        _check(self.warmup >= 0, "warmup", "must be >= 0 (got {})".format(self.warmup))
        for i, (b, s) in enumerate(self.shapes):
            _check(b <= MAX_BENCH_BATCH and s <= MAX_SEQUENCE, "shapes[{}]".format(i),
                   "batch must be <= {:,} and sequence <= {:,} (got {})".format(MAX_BENCH_BATCH, MAX_SEQUENCE, [b, s]))
        for key, limit in (("warmup", 100000), ("iterations", 100000), ("repeats", 1000), ("ort_iterations", 10000),
                           ("torch_timeout_s", 86400)):
            _at_most(self, key, limit, "a bench run of days measures nothing more")


@dataclass(frozen=True)
class Config:
    """A whole model config (`configs/<model>.yaml`)."""

    model: ModelConfig
    export: ExportConfig = field(default_factory=ExportConfig)
    data: DataConfig = field(default_factory=DataConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)

    def __post_init__(self):
        top = self.export.max_length
        if top is not None:
            for i, b in enumerate(self.data.buckets):
                _check(b <= top, "data.buckets[{}]".format(i),
                       "{} exceeds export.max_length {}".format(b, top))

    @property
    def workdir(self):
        return self.model.resolved_workdir

    def replace(self, **sections):
        """A copy with some sections (or model fields, via `model=`) replaced."""
        return dataclasses.replace(self, **sections)



# ---------------------------------------------------------------------------------------------
# Generic, typed dict -> dataclass conversion with key paths in every error.

def _convert(tp, value, path):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, path)
    if dataclasses.is_dataclass(tp):
        return _from_mapping(tp, value, path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, "must be a list (got {!r})".format(value))
        if len(args) == 2 and args[1] is Ellipsis:
            item_types = [args[0]] * len(value)
        else:
            if len(value) != len(args):
                raise ConfigError(path, "must be a list of {} values (got {})".format(len(args), len(value)))
            item_types = list(args)
        return tuple(_convert(t, v, "{}[{}]".format(path, i)) for i, (t, v) in enumerate(zip(item_types, value)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, "must be true or false (got {!r})".format(value))
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, "must be an integer (got {!r})".format(value))
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, "must be a number (got {!r})".format(value))
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, "must be a string (got {!r})".format(value))
        return value
    raise TypeError("unsupported config type {!r} at {}".format(tp, path))  # a bug, not user input


def _from_mapping(cls, data, path=""):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, "must be a mapping of keys to values (got {!r})".format(data))
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(_join(path, str(key)), "unknown key (known: {})".format(", ".join(fields)))
    kwargs = {}
    for name, f in fields.items():
        sub = _join(path, name)
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise ConfigError(sub, "missing (this key is required)")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise e.under(path) from None


def _join(path, key):
    return "{}.{}".format(path, key) if path else key


def config_from_dict(data):
    """Validate a plain dict (as read from YAML) into a `Config`."""
    return _from_mapping(Config, data)


def load_config(path):
    """Read and validate `configs/<model>.yaml`."""
    import yaml

    if not os.path.isfile(path):
        raise TrtbuildError("config file {} not found; pass an existing YAML, e.g. configs/bert-base-zh.yaml".format(path))
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = " line {}".format(mark.line + 1) if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise TrtbuildError("config {}{}: not valid YAML ({})".format(path, where, problem)) from None
    except UnicodeDecodeError:
        raise TrtbuildError("config {} is not UTF-8 text".format(path)) from None
    try:
        return config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(e.path, "{} (in {})".format(e.reason, path)) from None


def default_config(name):
    """The config used when no `--config` is given: defaults everywhere, named after the model."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"
    return Config(model=ModelConfig(name=safe))


def with_overrides(config, checkpoint=None, workdir=None):
    """Command-line values win over the config's."""
    changes: Dict[str, Any] = {}
    if checkpoint is not None:
        changes["checkpoint"] = str(checkpoint)
    if workdir is not None:
        changes["workdir"] = str(workdir)
    if not changes:
        return config
    return config.replace(model=dataclasses.replace(config.model, **changes))
