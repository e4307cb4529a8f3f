"""`trtbuild export`: a local Hugging Face sequence-classification checkpoint -> ONNX, checked against PyTorch.

The ONNX has dynamic batch x sequence axes on every input (input_ids, attention_mask, and
token_type_ids when the model uses them) and one output, `logits`. Beside it in the work directory:
the tokenizer files, `labels.json`, and `export.json` (opset, inputs, max length, versions, hashes,
and the per-shape parity numbers). `export.json` is written last: a work directory without it holds
no finished export.

Offline and safe: safetensors weights only, `local_files_only`, never `trust_remote_code`.
The exported module is a small keyword-argument wrapper put in eval mode (transformers 5 rejects
positional inputs in the TorchScript exporter, and a wrapper left in train mode keeps dropout on).
Validation follows Optimum's `validate_model_outputs`: several shapes, max |diff| per shape.
"""

import contextlib
import inspect
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import numpy as np

from trtbuild import __version__
from trtbuild._util import Result, first_line, noop
from trtbuild.config import MODEL_SHAPE_KEYS
from trtbuild.errors import CheckpointError, MissingDependencyError, OutputExistsError, ParityError
from trtbuild.workdir import LABELS_NAME, ONNX_NAME, TOKENIZER_DIR, StagedOutputs, WorkDir, atomic_write_json, \
    locked, remove, sha256_file, sha256_tree

INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "logits"
EXPORT_FORMAT = "trtbuild-export/2"
DEFAULT_MAX_LENGTH = 256
_ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert", "xlm-roberta-xl")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model", "spiece.model", "vocab.json")


@dataclass
class ShapeCheck:
    """ONNX Runtime vs PyTorch on one input shape."""

    batch: int
    sequence: int
    max_abs_diff: float
    ok: bool

    def describe(self):
        return "batch {} x seq {}: max |diff| {:.3g} {}".format(
            self.batch, self.sequence, self.max_abs_diff, "ok" if self.ok else "TOO LARGE")


@dataclass
class CheckpointInfo:
    """What `config.json` and the file listing say about a checkpoint, read without torch."""

    path: str
    architecture: str
    model_type: str
    num_labels: int
    weight_files: List[str]
    max_position_embeddings: Optional[int]


@dataclass
class ExportResult(Result):
    workdir: str
    onnx: str
    checkpoint: str
    architecture: str
    inputs: List[str]
    output: str
    opset: int
    max_length: int
    labels: List[str]
    tolerance: float
    checks: List[ShapeCheck]
    onnx_bytes: int
    seconds: float
    sha256: Dict[str, str] = field(default_factory=dict)
    versions: Dict[str, str] = field(default_factory=dict)

    @property
    def max_abs_diff(self):
        return max(c.max_abs_diff for c in self.checks)

    def __bool__(self):
        return all(c.ok for c in self.checks)

    def to_dict(self):
        d = asdict(self)
        d["max_abs_diff"] = self.max_abs_diff
        return d

    def summary(self):
        return "\n".join([
            "exported {} ({:.1f} MiB, opset {}, inputs {}, labels {})".format(
                self.onnx, self.onnx_bytes / (1 << 20), self.opset, ", ".join(self.inputs), ", ".join(self.labels)),
            "parity vs PyTorch: max |diff| {:.3g} over {} shapes (tolerance {:g})".format(
                self.max_abs_diff, len(self.checks), self.tolerance),
            "done in {:.1f} s; details in {}".format(self.seconds, WorkDir(self.workdir).export_json)])


# ---------------------------------------------------------------------------------------------
# Checks that need no torch: fail fast, with a message that says what to do.

def inspect_checkpoint(path):
    """Read a checkpoint directory's config and file list; raise CheckpointError if unusable."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise CheckpointError("checkpoint {} is not a directory; pass a local Hugging Face checkpoint "
                              "directory (config.json + model.safetensors + tokenizer files)".format(path))
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise CheckpointError("checkpoint {} has no config.json; save it with model.save_pretrained(dir) "
                              "so the directory holds config.json and model.safetensors".format(path))
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError("checkpoint {}: config.json is not valid JSON ({})".format(path, e)) from None
    if not isinstance(cfg, dict):
        raise CheckpointError("checkpoint {}: config.json is not a JSON object".format(path))
    if cfg.get("auto_map"):
        raise CheckpointError("checkpoint {} needs custom model code (auto_map in config.json); trtbuild never "
                              "runs remote code: convert it to a standard transformers architecture".format(path))
    archs = cfg.get("architectures") or []
    if not isinstance(archs, list):
        raise CheckpointError("checkpoint {}: architectures in config.json must be a list of class names (got {!r}); "
                              "fix config.json".format(path, archs))
    cls = [a for a in archs if isinstance(a, str) and a.endswith("ForSequenceClassification")]
    if not cls:
        found = ", ".join(map(str, archs)) or "no architecture"
        raise CheckpointError("checkpoint {} is not a sequence-classification model ({} in config.json); "
                              "export a *ForSequenceClassification checkpoint (a fine-tuned classifier "
                              "with its head)".format(path, found))
    files = sorted(os.listdir(path))
    weights = [f for f in files if f.endswith(".safetensors")]
    if not weights:
        pickles = [f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt"))]
        if pickles:
            raise CheckpointError("checkpoint {} has only pickle weights ({}); trtbuild loads safetensors only: "
                                  "convert it with model.save_pretrained(dir, safe_serialization=True)"
                                  .format(path, ", ".join(pickles)))
        raise CheckpointError("checkpoint {} has no model.safetensors; save the weights with "
                              "model.save_pretrained(dir)".format(path))
    if not any(f in files for f in _TOKENIZER_FILES):
        raise CheckpointError("checkpoint {} has no tokenizer files ({}); save the tokenizer beside the model "
                              "with tokenizer.save_pretrained(dir)".format(path, " or ".join(_TOKENIZER_FILES[:2])))
    id2label = cfg.get("id2label") or {}
    raw = cfg.get("num_labels")
    if raw is not None and (isinstance(raw, bool) or not isinstance(raw, int) or raw < 1):
        raise CheckpointError("checkpoint {}: num_labels in config.json must be a positive integer (got {!r}); "
                              "fix config.json".format(path, raw))
    if not isinstance(id2label, dict):
        raise CheckpointError("checkpoint {}: id2label in config.json must map ids to names (got {!r})".format(
            path, id2label))
    num_labels = int(raw or len(id2label) or 2)
    if cfg.get("model_type") is not None and not isinstance(cfg.get("model_type"), str):
        raise CheckpointError("checkpoint {}: model_type in config.json must be a string".format(path))
    for key in ("vocab_size", "max_position_embeddings", "hidden_size", "num_hidden_layers"):
        value = cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise CheckpointError("checkpoint {}: {} in config.json must be a positive integer (got {!r}); fix "
                                  "config.json".format(path, key, value))
    return CheckpointInfo(path=path, architecture=cls[0], model_type=str(cfg.get("model_type", "")),
                          num_labels=num_labels, weight_files=weights,
                          max_position_embeddings=cfg.get("max_position_embeddings"))


def check_outputs_free(workdir, force):
    """Refuse to overwrite an earlier export unless `force`."""
    existing = [os.path.basename(p) for p in workdir.export_outputs() if os.path.exists(p)]
    if existing and not force:
        raise OutputExistsError("{} already holds an export ({}); pass --force to overwrite it, or choose "
                                "another -o WORKDIR".format(workdir.root, ", ".join(existing)))


def resolve_max_length(info, configured):
    limit = info.max_position_embeddings
    if limit is not None and info.model_type in _ROBERTA_LIKE:
        limit -= 2  # positions start after the padding index
    if configured is not None:
        if limit is not None and configured > limit:
            raise CheckpointError("export.max_length {} exceeds what the model supports ({} positions); "
                                  "lower export.max_length".format(configured, limit))
        return configured
    return min(DEFAULT_MAX_LENGTH, limit) if limit else DEFAULT_MAX_LENGTH


# ---------------------------------------------------------------------------------------------
# The export itself.

def _import_torch_stack():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import onnx
        import onnxruntime
        import torch
        import transformers
    except ImportError as e:
        raise MissingDependencyError("export needs torch, transformers, onnx and onnxruntime ({}); install them "
                                     "with `make install` or pip install 'trtbuild[cpu]'".format(e)) from None
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return torch, transformers, onnx, onnxruntime


def load_checkpoint(info, attn_implementation="eager"):
    """Tokenizer and model (fp32, eval mode) from a local directory: no hub, no remote code."""
    torch, transformers, _, _ = _import_torch_stack()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(info.path, local_files_only=True,
                                                               trust_remote_code=False)
    except Exception as e:  # transformers raises many types here; the message is what matters
        raise CheckpointError("checkpoint {}: could not load the tokenizer ({})".format(info.path, first_line(e))) from None
    try:
        model, loading = transformers.AutoModelForSequenceClassification.from_pretrained(
            info.path, local_files_only=True, trust_remote_code=False, use_safetensors=True,
            attn_implementation=attn_implementation, output_loading_info=True, ignore_mismatched_sizes=True)
    except Exception as e:
        raise CheckpointError("checkpoint {}: could not load the model ({})".format(info.path, first_line(e))) from None
    check_loading(info, type(model).__name__, loading)
    model = model.float().eval()
    if len(tokenizer) > model.config.vocab_size:
        raise CheckpointError("checkpoint {}: the tokenizer has {} tokens but the model's embedding only {}; "
                              "save the matching tokenizer with the model".format(info.path, len(tokenizer),
                                                                                 model.config.vocab_size))
    return tokenizer, model


def check_loading(info, loaded_class, loading):
    """Refuse a model whose weights did not all load: transformers fills missing weights with random ones and
    says so only in a (muted) warning, and a parity check against that same random model passes."""
    problems = []
    for key, what in (("missing_keys", "missing (would be random)"), ("unexpected_keys", "not used by {}".format(
            loaded_class)), ("mismatched_keys", "of the wrong shape")):
        names = [k if isinstance(k, str) else str(k[0]) for k in (loading or {}).get(key) or []]
        if names:
            shown = ", ".join(names[:4]) + (" … ({} in all)".format(len(names)) if len(names) > 4 else "")
            problems.append("{} weight(s) {}: {}".format(len(names), what, shown))
    errors = [str(e) for e in (loading or {}).get("error_msgs") or []]
    if errors:
        problems.append(first_line(errors[0]))
    if problems:
        raise CheckpointError("checkpoint {}: its weights do not fit {} (model_type {!r}): {}; export a checkpoint "
                              "saved with save_pretrained from the fine-tuned model, with the model_type it was "
                              "trained as".format(info.path, loaded_class, info.model_type, "; ".join(problems)))


def model_inputs(tokenizer, model, configured=None):
    """The ONNX inputs: configured, or what the tokenizer produces and the model accepts."""

    accepted = set(inspect.signature(model.forward).parameters)
    names = list(configured) if configured else list(getattr(tokenizer, "model_input_names", INPUT_ORDER))
    chosen = [n for n in INPUT_ORDER if n in names and n in accepted]
    if "input_ids" not in chosen:
        raise CheckpointError("the model takes no input_ids; trtbuild exports text classifiers")
    if "token_type_ids" in chosen and getattr(model.config, "type_vocab_size", 2) <= 1 and not configured:
        chosen.remove("token_type_ids")  # a single segment type: the input carries no information
    return chosen


def _make_wrapper(torch, model, input_names, mask="model"):
    """A module taking the inputs by position that calls the model by keyword and returns logits.
    mask="additive": the 2-D attention mask becomes the [batch, 1, 1, seq] additive mask
    (1 - mask) * -10000 before the model sees it (transformers passes a 4-D mask through as-is)."""

    class ExportWrapper(torch.nn.Module):
        def __init__(self, inner, names):
            super().__init__()
            self.inner = inner
            self.names = list(names)

        def forward(self, *args):
            feeds = dict(zip(self.names, args))
            if mask == "additive" and "attention_mask" in feeds:
                m = feeds["attention_mask"][:, None, None, :].to(torch.float32)
                feeds["attention_mask"] = (1.0 - m) * -10000.0
            return self.inner(**feeds).logits

    return ExportWrapper(model, input_names).eval()


def sample_inputs(tokenizer, vocab_size, input_names, batch, sequence, seed=0):
    """Deterministic int64 inputs of one shape: [CLS] random tokens [SEP], rows padded to varied lengths."""

    rng = np.random.default_rng(seed + 1000 * batch + sequence)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    low = max(special) + 1 if special and max(special) < vocab_size // 2 else 0
    ids = rng.integers(low, vocab_size, size=(batch, sequence), dtype=np.int64)
    mask = np.ones((batch, sequence), dtype=np.int64)
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for row in range(batch):
        length = sequence if row == 0 else int(rng.integers(2, sequence + 1))
        if cls_id is not None:
            ids[row, 0] = cls_id
        if sep_id is not None:
            ids[row, length - 1] = sep_id
        ids[row, length:] = pad_id
        mask[row, length:] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in input_names:
        types = np.zeros((batch, sequence), dtype=np.int64)
        types[:, sequence // 2:] = 1
        out["token_type_ids"] = types * mask
    return {n: out[n] for n in input_names}


def validate_parity(onnx_path, wrapper, tokenizer, vocab_size, input_names, batches, lengths, tolerance,
                    progress=noop):
    """Run ONNX Runtime and PyTorch on each (batch, length); return one ShapeCheck per shape."""
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(onnx_path, sess_options=opts, providers=["CPUExecutionProvider"])
    checks = []
    for batch in batches:
        for length in lengths:
            feeds = sample_inputs(tokenizer, vocab_size, input_names, batch, length)
            with torch.no_grad():
                ref = wrapper(*[torch.from_numpy(feeds[n]) for n in input_names]).numpy()
            got = session.run([OUTPUT_NAME], feeds)[0]
            if got.shape != ref.shape:
                diff = float("inf")
            else:
                diff = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))
            check = ShapeCheck(batch=batch, sequence=length, max_abs_diff=diff, ok=diff <= tolerance)
            progress("  " + check.describe())
            checks.append(check)
    return checks


def export_onnx(config, force=False, progress=noop):
    """Export `config.model.checkpoint` into `config.workdir`; return an ExportResult (raises on failure).

    The new export is staged and validated first; only then does it replace an earlier one (model.onnx,
    tokenizer/, labels.json renamed in, export.json written last), and what was made from the earlier one
    (Q/DQ model, scales, engines, reports, caches) is removed. A failed export changes nothing."""
    if not config.model.checkpoint:
        raise CheckpointError("no checkpoint given; pass CHECKPOINT or set model.checkpoint in the config")
    info = inspect_checkpoint(config.model.checkpoint)
    workdir = WorkDir(config.workdir)
    if os.path.exists(workdir.root) and not os.path.isdir(workdir.root):
        raise OutputExistsError("{} exists and is not a directory; choose another -o WORKDIR".format(workdir.root))
    check_outputs_free(workdir, force)
    existed = os.path.isdir(workdir.root)
    try:
        with locked(workdir.root):
            return _export(config, info, workdir, progress)
    except BaseException:
        if not existed:  # a failed first export leaves no empty work directory behind
            with contextlib.suppress(OSError):
                os.rmdir(workdir.root)
        raise


def _export(config, info, workdir, progress):
    start = time.perf_counter()
    max_length = resolve_max_length(info, config.export.max_length)
    ecfg = config.export
    progress("[1/4] loading {} ({}, {} labels)".format(info.path, info.architecture, info.num_labels))
    torch, transformers, onnx, onnxruntime = _import_torch_stack()
    tokenizer, model = load_checkpoint(info, ecfg.attn_implementation)
    input_names = model_inputs(tokenizer, model, ecfg.inputs)
    wrapper = _make_wrapper(torch, model, input_names, ecfg.mask)
    vocab_size = int(model.config.vocab_size)
    id2label = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
    labels = [id2label.get(i, "LABEL_{}".format(i)) for i in range(int(model.config.num_labels))]
    lengths = sorted({min(ecfg.short_length, max_length), max_length})

    with StagedOutputs(workdir.root, "export") as staged:
        tmp_onnx = staged.path(ONNX_NAME)
        progress("[2/4] exporting ONNX (opset {}, inputs {}, dynamic batch x sequence)".format(
            ecfg.opset, ", ".join(input_names)))
        dummy = sample_inputs(tokenizer, vocab_size, input_names, 2, min(16, max_length))
        axes = {n: {0: "batch", 1: "sequence"} for n in input_names}
        axes[OUTPUT_NAME] = {0: "batch"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.no_grad():
                torch.onnx.export(wrapper, tuple(torch.from_numpy(dummy[n]) for n in input_names), tmp_onnx,
                                  dynamo=False, opset_version=ecfg.opset, input_names=input_names,
                                  output_names=[OUTPUT_NAME], dynamic_axes=axes, do_constant_folding=True)
        onnx.checker.check_model(tmp_onnx)

        progress("[3/4] validating ONNX Runtime against PyTorch (tolerance {:g})".format(ecfg.tolerance))
        # the reference is the model's own forward (its own mask code), whatever the exported graph does
        checks = validate_parity(tmp_onnx, _make_wrapper(torch, model, input_names), tokenizer, vocab_size, input_names,
                                 ecfg.validate_batches, lengths, ecfg.tolerance, progress)
        bad = [c for c in checks if not c.ok]
        if bad:
            raise ParityError("ONNX Runtime differs from PyTorch beyond tolerance {:g}: {}; nothing was written "
                              "(raise export.tolerance only if the difference is expected)".format(
                                  ecfg.tolerance, "; ".join(c.describe() for c in bad)), checks)
        tokenizer.save_pretrained(staged.path(TOKENIZER_DIR))
        atomic_write_json(staged.path(LABELS_NAME), {"labels": labels,
                                                     "id2label": {str(i): l for i, l in enumerate(labels)},
                                                     "label2id": {l: i for i, l in enumerate(labels)}})
        versions = {"trtbuild": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                    "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
        sha = {"onnx": sha256_file(tmp_onnx), "tokenizer": sha256_tree(staged.path(TOKENIZER_DIR))}
        for name in info.weight_files:
            sha["weights/" + name] = sha256_file(os.path.join(info.path, name))
        result = ExportResult(
            workdir=workdir.root, onnx=workdir.onnx, checkpoint=os.path.abspath(info.path),
            architecture=info.architecture, inputs=input_names, output=OUTPUT_NAME, opset=ecfg.opset,
            max_length=max_length, labels=labels, tolerance=ecfg.tolerance, checks=checks,
            onnx_bytes=os.path.getsize(tmp_onnx), seconds=round(time.perf_counter() - start, 3), sha256=sha,
            versions=versions)
        record = result.to_dict()
        record.update(format=EXPORT_FORMAT, loaded_class=type(model).__name__, input_axes={
            n: ["batch", "sequence"] for n in input_names}, input_dtype="int64", model_type=info.model_type,
            vocab_size=vocab_size, files={"onnx": ONNX_NAME, "tokenizer": TOKENIZER_DIR, "labels": LABELS_NAME},
            model_shape={k: getattr(model.config, k) for k in MODEL_SHAPE_KEYS
                         if isinstance(getattr(model.config, k, None), int)})
        progress("[4/4] writing model.onnx, tokenizer, labels and export.json to {}".format(workdir.root))
        staged.commit(workdir.export_json, record)
    removed = [os.path.basename(p) for p in workdir.derived_outputs() if os.path.lexists(p)]
    for path in workdir.derived_outputs():  # made from the export this one replaced
        remove(path)
    if removed:
        progress("  removed what the previous export's steps made: {}".format(", ".join(removed)))
    return result
