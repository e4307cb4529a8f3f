"""`trtbuild calibrate`: INT8 calibration from text -> explicit Q/DQ ONNX, scales.json, coverage report.

Pipeline (CPU, ONNX Runtime; no GPU):
1. Corpus -> tokens in length buckets (`trtbuild.data`), padded to the bucket length.
2. Coverage of the corpus against the slang lexicon and the eval set (`trtbuild.coverage`); a
   configured gate (`calibrate.min_slang_coverage`) stops here with exit 1 and the missing terms.
3. Statistics: the exported FP32 ONNX runs in ONNX Runtime with every tensor that feeds a
   quantized op added as a graph output; |x| of real (unpadded) token positions goes into 2048-bin
   histograms with power-of-two ranges (`trtbuild.histogram`), so the result does not depend on the
   batch size or order.
4. Scales: per-tensor amax by entropy (KL, TensorRT-style; default), minmax or percentile.
5. Q/DQ ONNX (`model.qdq.onnx`), the placement TensorRT fuses well, after ModelOpt's ONNX PTQ:
   - MatMul / Gemm with a weight initializer: the activation input gets a per-tensor symmetric
     QuantizeLinear -> DequantizeLinear pair (int8, zero point 0); the weight stays FP32 behind its
     own Q -> DQ pair, per output channel, symmetric (TensorRT 8.6 cannot build int8 weight initializers).
   - residual Add (the Add before each LayerNorm whose inputs are a sublayer output and the
     previous LayerNorm's output): with `calibrate.quantize_residual` both inputs are quantized, so
     TensorRT can fuse the add into the int8 GEMM. Off by default: measured on the default model
     (400 eval texts, ONNX Runtime), residual Q/DQ cost 20 points of accuracy with entropy scales
     (58.3 % vs 78.8 %) and 5 with minmax (78.0 % vs 82.8 %); the BERT residual stream carries
     outlier channels (|x| up to 208 where the bulk is < 20) that per-tensor int8 cannot hold.
   - LayerNorm, Softmax, GELU and the attention core (Q.K^T and P.V) stay float (FP16 in the
     engine). `--exclude` takes node-name patterns (fnmatch) to keep more in float.
   One Q/DQ pair per tensor, shared by all its quantized consumers.
6. Outputs, each written to a temp name and renamed: model.qdq.onnx, scales.json (our format:
   tensor -> amax, method, histogram settings, corpus hash; TensorRT-version neutral),
   coverage.json + coverage.html, and with --trt-cache a TensorRT <= 10 calibration cache.
"""

import fnmatch
import hashlib
import os
import struct
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

from trtbuild import __version__
from trtbuild.artifacts import WorkDir, atomic_path, atomic_write_json, atomic_write_text, read_json
from trtbuild.errors import TrtbuildError
from trtbuild.export import check_export

QDQ_NAME = "model.qdq.onnx"
SCALES_NAME = "scales.json"
CACHE_NAME = "calibration.cache"
SCALES_FORMAT = "trtbuild-scales/1"
METHODS = ("entropy", "minmax", "percentile")


class CoverageGateError(TrtbuildError):
    """The calibration corpus misses too much of the slang the eval set uses (exit 1)."""


def _noop(msg):
    pass


# ---------------------------------------------------------------------------------------------
# Q/DQ placement

@dataclass
class QdqPlan:
    """Which tensors get Q/DQ: activations per tensor, weights per channel, and who consumes them."""

    activations: Dict[str, List[Tuple[str, int]]] = field(default_factory=dict)  # tensor -> [(node, input idx)]
    weights: Dict[str, Tuple[int, List[Tuple[str, int]]]] = field(default_factory=dict)  # init -> (axis, consumers)
    quantized_nodes: List[str] = field(default_factory=list)
    excluded_nodes: List[str] = field(default_factory=list)

    def to_dict(self):
        return {"activations": sorted(self.activations), "weights": {k: v[0] for k, v in sorted(self.weights.items())},
                "quantized_nodes": self.quantized_nodes, "excluded_nodes": self.excluded_nodes}


def plan_qdq(model, exclude=(), quantize_residual=False, quantize_attention=False):
    """Decide the Q/DQ placement for an exported BERT graph (see the module docstring)."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers = {}
    for n in graph.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))
    plan = QdqPlan()

    def excluded(node):
        return any(fnmatch.fnmatchcase(node.name, pat) for pat in exclude)

    def add_act(tensor, node, idx):
        plan.activations.setdefault(tensor, []).append((node.name, idx))

    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Add"):
            continue
        if node.op_type == "Add":
            if not quantize_residual or len(node.input) != 2 or any(i in inits for i in node.input):
                continue
            if not any(c.op_type == "LayerNormalization" for c, _ in consumers.get(node.output[0], [])):
                continue
            if not any(producer.get(i) is not None and producer[i].op_type == "LayerNormalization"
                       for i in node.input):
                continue  # the embeddings' sum: not a residual connection
        if excluded(node):
            plan.excluded_nodes.append(node.name)
            continue
        ins = list(node.input[:2])
        if node.op_type in ("MatMul", "Gemm"):
            weights = [i for i, name in enumerate(ins) if name in inits]
            if not weights and not quantize_attention:
                continue  # the attention core (Q.K^T, P.V) stays float
            if any(len(inits[ins[i]].dims) != 2 for i in weights):
                continue
            for i, name in enumerate(ins):
                if name in inits:
                    if node.op_type == "Gemm":
                        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
                        axis = 0 if (i == 1 and trans_b) else 1
                    else:
                        axis = 1  # MatMul weight [in, out]: one scale per output column
                    plan.weights.setdefault(name, (axis, []))[1].append((node.name, i))
                else:
                    add_act(name, node, i)
            plan.quantized_nodes.append(node.name)
        else:  # residual Add
            for i, name in enumerate(ins):
                add_act(name, node, i)
            plan.quantized_nodes.append(node.name)
    return plan


# ---------------------------------------------------------------------------------------------
# Statistics with ONNX Runtime

def _session(model):
    from trtbuild.runners import ort_session

    return ort_session(model, basic_optimizations=True)


def collect_histograms(model, tensors, batches, bins=2048, progress_bar=None):
    """Run the model over `batches`, histogramming |x| of each tensor at real token positions."""
    import onnx

    from trtbuild.histogram import AbsHistogram

    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    existing = {o.name for o in augmented.graph.output}
    names = sorted(tensors)
    for name in names:
        if name not in existing:
            augmented.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = _session(augmented.SerializeToString())
    hists = {name: AbsHistogram(bins=bins) for name in names}
    for batch in batches:
        outs = session.run(names, batch.inputs)
        mask = batch.inputs["attention_mask"].astype(bool)
        b, s = mask.shape
        for name, arr in zip(names, outs):
            if arr.ndim >= 2 and arr.shape[0] == b and arr.shape[1] == s:
                arr = arr[mask]  # padded positions carry no real activations
            hists[name].update(arr)
        if progress_bar is not None:
            progress_bar.update(len(batch.rows))
    return hists


def weight_amax(model, plan):
    """Per-channel max |w| of every quantized weight: {name: float32 array}."""
    import numpy as np
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for name, (axis, _) in plan.weights.items():
        w = numpy_helper.to_array(inits[name]).astype(np.float32)
        reduce_axis = 1 - axis
        out[name] = np.abs(w).max(axis=reduce_axis).astype(np.float32)
    return out


def _scale(amax):
    import numpy as np

    return (np.maximum(np.asarray(amax, dtype=np.float32), np.float32(1e-12)) / np.float32(127.0)).astype(np.float32)


def build_qdq_model(model, plan, act_amax, w_amax):
    """A copy of `model` with QuantizeLinear -> DequantizeLinear pairs inserted per the plan."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    qdq = onnx.ModelProto()
    qdq.CopyFrom(model)
    graph = qdq.graph
    new_inits = []
    rewire = {}  # (node name, input idx) -> dq tensor
    pending = {}  # tensor -> [Q node, DQ node] to emit before its first consumer

    def pair(tensor, scale, axis=None):
        safe = tensor.replace("/", "_").replace(":", "_").strip("_")
        s_name, z_name = safe + "_scale", safe + "_zero_point"
        q_out, dq_out = tensor + "_quantized", tensor + "_dequantized"
        new_inits.append(numpy_helper.from_array(np.asarray(scale, dtype=np.float32), s_name))
        new_inits.append(numpy_helper.from_array(np.zeros(np.shape(scale), dtype=np.int8), z_name))
        kwargs = {} if axis is None else {"axis": axis}
        q = helper.make_node("QuantizeLinear", [tensor, s_name, z_name], [q_out], name=safe + "_QuantizeLinear", **kwargs)
        dq = helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out], name=safe + "_DequantizeLinear",
                              **kwargs)
        pending[tensor] = [q, dq]
        return dq_out

    for tensor, uses in plan.activations.items():
        dq_out = pair(tensor, _scale(act_amax[tensor]))
        for use in uses:
            rewire[use] = dq_out
    for name, (axis, uses) in plan.weights.items():
        dq_out = pair(name, _scale(w_amax[name]), axis=axis)
        for use in uses:
            rewire[use] = dq_out

    nodes = []
    emitted = set()
    graph_inputs = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    for tensor in list(pending):
        if tensor in graph_inputs:  # weights and graph inputs: their Q/DQ can go first
            nodes += pending[tensor]
            emitted.add(tensor)
    for node in graph.node:
        for idx, name in enumerate(node.input):
            if (node.name, idx) in rewire and name not in emitted:
                nodes += pending[name]
                emitted.add(name)
        for idx in range(len(node.input)):
            if (node.name, idx) in rewire:
                node.input[idx] = rewire[(node.name, idx)]
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    return qdq


# ---------------------------------------------------------------------------------------------
# Outputs

def trt_calibration_cache(act_amax, header="TRT-8600-EntropyCalibration2"):
    """A TensorRT (<= 10) calibration cache: `name: big-endian float32 scale in hex` per tensor."""
    lines = [header]
    for name in sorted(act_amax):
        scale = max(float(act_amax[name]), 1e-12) / 127.0
        lines.append("{}: {}".format(name, struct.pack(">f", scale).hex()))
    return "\n".join(lines) + "\n"


def corpus_hash(texts):
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


@dataclass
class CalibrateResult:
    workdir: str
    qdq_onnx: str
    scales: str
    coverage_json: Optional[str]
    coverage_html: Optional[str]
    cache: Optional[str]
    method: str
    texts: int
    truncated: int
    skipped_lines: Dict[str, List[int]]
    buckets: Dict[int, int]
    activations: int
    weights: int
    quantized_nodes: int
    excluded_nodes: List[str]
    seconds: float
    calibration_seconds: float
    coverage: Optional[dict] = None
    accuracy: Optional[dict] = None

    def to_dict(self):
        d = asdict(self)
        d["buckets"] = {str(k): v for k, v in self.buckets.items()}
        return d


def _load_tokenizer(workdir):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(WorkDir(workdir).tokenizer, local_files_only=True)


def _progress_bar(total, desc):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the GPU side may lack tqdm; a bar is a nicety
        return None
    return tqdm(total=total, desc=desc, unit="text", leave=False, dynamic_ncols=True)


def evaluate_accuracy(onnx_models, tokenizer, corpus, buckets, input_names, label_names, batch_size=32):
    """Accuracy of each ONNX model (path or bytes) on a labelled corpus, overall and per source file."""
    import numpy as np

    from trtbuild.data import tokenize_into_buckets

    rows = [i for i, l in enumerate(corpus.labels) if l is not None]
    index = {name: i for i, name in enumerate(label_names)}
    y = []
    for i in rows:
        label = corpus.labels[i]
        y.append(index[label] if label in index else int(label))
    y = np.asarray(y)
    tok = tokenize_into_buckets(tokenizer, [corpus.texts[i] for i in rows], buckets)
    results = {}
    for name, model in onnx_models.items():
        session = _session(model)
        pred = np.zeros(len(rows), dtype=np.int64)
        for batch in tok.batches(input_names, batch_size, pad_id=tokenizer.pad_token_id or 0):
            pred[batch.rows] = session.run(["logits"], batch.inputs)[0].argmax(-1)
        per_source = {}
        for src in sorted(set(corpus.sources[i] for i in rows)):
            sel = np.asarray([corpus.sources[i] == src for i in rows])
            per_source[src] = round(float((pred[sel] == y[sel]).mean()), 4)
        results[name] = {"accuracy": round(float((pred == y).mean()), 4), "per_source": per_source,
                         "texts": len(rows)}
    return results


def calibrate(config, corpus_paths=None, method=None, exclude=None, max_texts=None, batch_size=None,
              on_bad_utf8=None, trt_cache=None, evaluate=True, progress=_noop, show_bar=True):
    """Calibrate `config.workdir`'s export over the corpus; returns a CalibrateResult (raises on failure)."""
    import onnx

    from trtbuild.coverage import coverage_report, write_coverage
    from trtbuild.data import load_corpus, load_lexicon, tokenize_into_buckets
    from trtbuild.histogram import compute_amax

    ccfg = config.calibrate
    method = method or ccfg.method
    if method not in METHODS:
        raise TrtbuildError("unknown calibration method {!r}; use one of {}".format(method, ", ".join(METHODS)))
    exclude = tuple(exclude) if exclude else ccfg.exclude
    batch_size = batch_size or ccfg.batch_size
    max_texts = max_texts if max_texts is not None else ccfg.max_texts
    on_bad_utf8 = on_bad_utf8 or ccfg.on_bad_utf8
    trt_cache = ccfg.trt_cache if trt_cache is None else trt_cache
    paths = list(corpus_paths or config.data.calibration)

    start = time.perf_counter()
    wd = WorkDir(config.workdir)
    record = check_export(wd.root)
    input_names = record["inputs"]
    buckets = sorted(b for b in config.data.buckets if b <= record["max_length"]) or [record["max_length"]]

    progress("[1/5] loading the corpus ({} file(s))".format(len(paths)))
    corpus = load_corpus(paths, config.data.text_column, config.data.label_column, None, on_bad_utf8)
    for path, lines in corpus.skipped_lines.items():
        progress("  warning: {}: skipped {} non-UTF-8 line(s): {}".format(
            path, len(lines), ", ".join(map(str, lines[:10])) + (" …" if len(lines) > 10 else "")))
    texts = corpus.texts
    if max_texts is not None and len(texts) > max_texts:
        import random

        keep = sorted(random.Random(ccfg.sample_seed).sample(range(len(texts)), max_texts))
        texts = [texts[i] for i in keep]
        progress("  sampled {} of {} texts (seed {})".format(max_texts, len(corpus.texts), ccfg.sample_seed))
    tokenizer = _load_tokenizer(wd.root)
    tok = tokenize_into_buckets(tokenizer, texts, buckets)
    progress("  {} texts; per bucket {}; {} longer than {} tokens (truncated)".format(
        len(texts), ", ".join("{}: {}".format(b, len(r)) for b, r in sorted(tok.buckets.items())),
        tok.truncated, buckets[-1]))

    progress("[2/5] coverage of the corpus against the slang lexicon and the eval set")
    coverage = None
    eval_corpus = None
    if config.data.eval:
        eval_corpus = load_corpus(config.data.eval, config.data.text_column, config.data.label_column, None, "skip")
    if config.data.lexicon:
        lexicon = load_lexicon(config.data.lexicon)
        coverage = coverage_report(texts, lexicon, tokenizer, buckets=tuple(buckets),
                                   eval_texts=eval_corpus.texts if eval_corpus else None,
                                   min_slang_coverage=ccfg.min_slang_coverage)
        cov_json, cov_html = write_coverage(coverage, wd.root)
        for line in coverage.summary_lines():
            progress("  " + line)
        if not coverage.passed:
            raise CoverageGateError(coverage.failure_message() + "; widen the calibration corpus (details in {})"
                                    .format(cov_html))
    else:
        cov_json = cov_html = None
        progress("  skipped: no data.lexicon in the config")

    progress("[3/5] activation statistics with ONNX Runtime (CPU)")
    model = onnx.load(wd.onnx)
    plan = plan_qdq(model, exclude=exclude, quantize_residual=ccfg.quantize_residual)
    if not plan.activations:
        raise TrtbuildError("nothing to quantize in {} (all MatMul/Gemm excluded?)".format(wd.onnx))
    t_stats = time.perf_counter()
    bar = _progress_bar(len(texts), "calibrating") if show_bar else None
    try:
        hists = collect_histograms(model, plan.activations,
                                   tok.batches(input_names, batch_size, pad_id=tokenizer.pad_token_id or 0),
                                   bins=ccfg.num_bins, progress_bar=bar)
    finally:
        if bar is not None:
            bar.close()

    progress("[4/5] scales by {} ({} activations, {} weights per channel)".format(
        method, len(plan.activations), len(plan.weights)))
    options = {"percentile": ccfg.percentile} if method == "percentile" else {}
    # a threshold past the largest value seen only wastes int8 levels: clip to max |x|
    act_amax = {name: min(float(compute_amax(h, method, **options)), float(h.max_abs)) for name, h in hists.items()}
    w_amax = weight_amax(model, plan)
    calibration_seconds = time.perf_counter() - t_stats

    progress("[5/5] writing {}, {}".format(QDQ_NAME, SCALES_NAME))
    qdq = build_qdq_model(model, plan, act_amax, w_amax)
    onnx.checker.check_model(qdq)
    scales = {
        "format": SCALES_FORMAT, "trtbuild": __version__, "method": method, "options": options,
        "histogram": {"bins": ccfg.num_bins, "range": "power of two >= max |x|, exact merge",
                      "positions": "real tokens only (attention_mask == 1)"},
        "corpus": {"files": paths, "texts": len(texts), "sha256": corpus_hash(texts), "buckets": {
            str(b): len(r) for b, r in sorted(tok.buckets.items())}, "truncated": tok.truncated},
        "onnx_sha256": record["sha256"]["onnx"],
        "placement": {"quantize_residual": ccfg.quantize_residual, "exclude": list(exclude)},
        "activations": {name: {"amax": act_amax[name], "scale": act_amax[name] / 127.0,
                               "max_abs": float(hists[name].max_abs), "count": int(hists[name].count),
                               "consumers": [n for n, _ in plan.activations[name]]}
                        for name in sorted(act_amax)},
        "weights": {name: {"axis": axis, "channels": int(w_amax[name].size),
                           "amax_max": float(w_amax[name].max()), "amax_min": float(w_amax[name].min())}
                    for name, (axis, _) in sorted(plan.weights.items())},
        "quantized_nodes": plan.quantized_nodes, "excluded_nodes": plan.excluded_nodes,
    }
    qdq_path = wd.path(QDQ_NAME)
    with atomic_path(qdq_path) as tmp:
        onnx.save(qdq, tmp)
    atomic_write_json(wd.path(SCALES_NAME), scales)
    cache_path = None
    if trt_cache:
        cache_path = wd.path(CACHE_NAME)
        atomic_write_text(cache_path, trt_calibration_cache(act_amax))

    accuracy = None
    if evaluate and eval_corpus is not None and any(l is not None for l in eval_corpus.labels):
        progress("evaluating FP32 vs Q/DQ in ONNX Runtime on {} eval texts".format(len(eval_corpus)))
        accuracy = evaluate_accuracy({"fp32": wd.onnx, "qdq": qdq_path}, tokenizer, eval_corpus, buckets,
                                     input_names, record["labels"])
    return CalibrateResult(
        workdir=wd.root, qdq_onnx=qdq_path, scales=wd.path(SCALES_NAME), coverage_json=cov_json,
        coverage_html=cov_html, cache=cache_path, method=method, texts=len(texts), truncated=tok.truncated,
        skipped_lines=corpus.skipped_lines, buckets={b: len(r) for b, r in sorted(tok.buckets.items())},
        activations=len(plan.activations), weights=len(plan.weights), quantized_nodes=len(plan.quantized_nodes),
        excluded_nodes=plan.excluded_nodes, seconds=round(time.perf_counter() - start, 2),
        calibration_seconds=round(calibration_seconds, 2),
        coverage=coverage.to_dict() if coverage is not None else None, accuracy=accuracy)


def qdq_from_scales(workdir, progress=_noop):
    """Rebuild model.qdq.onnx from model.onnx + scales.json (no corpus, no ONNX Runtime): the scales
    are the portable artifact; this needs only onnx + numpy (it runs under the GPU side's Python 3.9)."""
    import onnx

    wd = WorkDir(workdir)
    record = check_export(wd.root)
    path = wd.path(SCALES_NAME)
    if not os.path.isfile(path):
        raise TrtbuildError("{} has no {}; run `trtbuild calibrate {}` first".format(wd.root, SCALES_NAME, wd.root))
    scales = read_json(path)
    if scales.get("format") != SCALES_FORMAT:
        raise TrtbuildError("{}: unknown format {!r} (expected {})".format(path, scales.get("format"), SCALES_FORMAT))
    if scales.get("onnx_sha256") != record["sha256"]["onnx"]:
        raise TrtbuildError("{} was computed for another model.onnx; re-run `trtbuild calibrate`".format(path))
    model = onnx.load(wd.onnx)
    placement = scales.get("placement", {})
    plan = plan_qdq(model, exclude=tuple(placement.get("exclude", ())),
                    quantize_residual=placement.get("quantize_residual", False))
    if sorted(plan.activations) != sorted(scales["activations"]):
        raise TrtbuildError("{} does not match the Q/DQ placement of {}; re-run `trtbuild calibrate`".format(
            path, wd.onnx))
    act_amax = {k: float(v["amax"]) for k, v in scales["activations"].items()}
    qdq = build_qdq_model(model, plan, act_amax, weight_amax(model, plan))
    out = wd.path(QDQ_NAME)
    with atomic_path(out) as tmp:
        onnx.save(qdq, tmp)
    progress("rebuilt {} from {} ({} activations, {} weights)".format(out, path, len(act_amax), len(plan.weights)))
    return out
