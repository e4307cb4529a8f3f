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


def _plan(model, exclude, ccfg):
    """plan_qdq with the placement switches of a CalibrateConfig."""
    return plan_qdq(model, exclude=exclude, quantize_residual=ccfg.quantize_residual,
                    quantize_attention=ccfg.quantize_attention)


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
    accuracy: Optional[dict] = None  # FP32 vs Q/DQ accuracy overall and per eval set (from the verify report)
    verify: Optional[dict] = None  # the verify report of the final Q/DQ model
    fallback: Optional[dict] = None  # the fallback search record (--auto-fallback)

    def to_dict(self):
        d = asdict(self)
        d["buckets"] = {str(k): v for k, v in self.buckets.items()}
        return d


def _load_tokenizer(workdir):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(WorkDir(workdir).tokenizer, local_files_only=True)


def _progress_bar(total, desc, unit="text"):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the GPU side may lack tqdm; a bar is a nicety
        return None
    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


def calibrate(config, corpus_paths=None, method=None, exclude=None, max_texts=None, batch_size=None,
              on_bad_utf8=None, trt_cache=None, evaluate=True, auto_fallback=None, progress=_noop, show_bar=True):
    """Calibrate `config.workdir`'s export over the corpus; returns a CalibrateResult (raises on failure).

    With a labelled eval set (data.eval) the Q/DQ model is verified at the end (`trtbuild.verify`, report in
    WORKDIR/reports/verify-qdq.*). With `auto_fallback`, a failed gate starts the fallback search
    (`fallback_search`): the most sensitive quantized layers go back to float one at a time until the gate
    passes or `calibrate.fallback_max_layers` is spent; the outputs then hold the final placement."""
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
    auto_fallback = ccfg.auto_fallback if auto_fallback is None else auto_fallback
    paths = list(corpus_paths or config.data.calibration)
    if auto_fallback and not config.data.eval:
        raise TrtbuildError("--auto-fallback needs a labelled eval set: set data.eval in the config or pass --eval FILE")

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
    plan = _plan(model, exclude, ccfg)
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
    scales = {
        "format": SCALES_FORMAT, "trtbuild": __version__, "method": method, "options": options,
        "histogram": {"bins": ccfg.num_bins, "range": "power of two >= max |x|, exact merge",
                      "positions": "real tokens only (attention_mask == 1)"},
        "corpus": {"files": paths, "texts": len(texts), "sha256": corpus_hash(texts), "buckets": {
            str(b): len(r) for b, r in sorted(tok.buckets.items())}, "truncated": tok.truncated},
        "onnx_sha256": record["sha256"]["onnx"],
    }
    stats = {name: (float(h.max_abs), int(h.count)) for name, h in hists.items()}
    qdq_path = _write_qdq(wd, model, plan, exclude, ccfg, act_amax, w_amax, scales, stats)
    cache_path = None
    if trt_cache:
        cache_path = wd.path(CACHE_NAME)
        atomic_write_text(cache_path, trt_calibration_cache(act_amax))

    accuracy = report = fallback = None
    if (evaluate or auto_fallback) and eval_corpus is not None:
        from trtbuild.verify import prepare_eval, verify_candidate

        try:
            evalset = prepare_eval(config, progress=progress, show_bar=show_bar)
        except TrtbuildError as e:
            if auto_fallback:
                raise
            evalset = None
            progress("  accuracy check skipped: {}".format(e))
        if evalset is not None:
            progress("verifying the Q/DQ model against FP32 in ONNX Runtime on {} eval texts".format(len(evalset)))
            report = verify_candidate(config, "qdq", evalset=evalset, progress=progress, show_bar=show_bar)
            progress("  " + report.summary())
            if auto_fallback and not report:
                fallback = fallback_search(config, model, exclude, act_amax, w_amax, evalset, report, progress=progress,
                                           show_bar=show_bar)
                if fallback["unquantized"]:
                    exclude = tuple(exclude) + tuple(_exact(n) for n in fallback["unquantized"])
                    plan = _plan(model, exclude, ccfg)
                    scales["fallback"] = fallback
                    qdq_path = _write_qdq(wd, model, plan, exclude, ccfg, act_amax, w_amax, scales,
                                          stats)
                    report = verify_candidate(config, "qdq", evalset=evalset, progress=progress, show_bar=show_bar)
                    progress("  after the fallback: " + report.summary())
            accuracy = _accuracy_table(report)
    return CalibrateResult(
        workdir=wd.root, qdq_onnx=qdq_path, scales=wd.path(SCALES_NAME), coverage_json=cov_json,
        coverage_html=cov_html, cache=cache_path, method=method, texts=len(texts), truncated=tok.truncated,
        skipped_lines=corpus.skipped_lines, buckets={b: len(r) for b, r in sorted(tok.buckets.items())},
        activations=len(plan.activations), weights=len(plan.weights), quantized_nodes=len(plan.quantized_nodes),
        excluded_nodes=plan.excluded_nodes, seconds=round(time.perf_counter() - start, 2),
        calibration_seconds=round(calibration_seconds, 2),
        coverage=coverage.to_dict() if coverage is not None else None, accuracy=accuracy,
        verify=report.to_dict() if report is not None else None, fallback=fallback)


def _exact(name):
    """An fnmatch pattern that matches exactly this node name."""
    import glob

    return glob.escape(name)


def _write_qdq(wd, model, plan, exclude, ccfg, act_amax, w_amax, scales, stats):
    """Write model.qdq.onnx and scales.json (placement and per-tensor records from `plan`); returns the ONNX path."""
    import onnx

    qdq = build_qdq_model(model, plan, act_amax, w_amax)
    onnx.checker.check_model(qdq)
    scales = dict(scales)
    scales["placement"] = {"quantize_residual": ccfg.quantize_residual,
                           "quantize_attention": ccfg.quantize_attention, "exclude": list(exclude)}
    scales["activations"] = {name: {"amax": act_amax[name], "scale": act_amax[name] / 127.0,
                                    "max_abs": stats[name][0], "count": stats[name][1],
                                    "consumers": [n for n, _ in plan.activations[name]]}
                             for name in sorted(plan.activations)}
    scales["weights"] = {name: {"axis": axis, "channels": int(w_amax[name].size), "amax_max": float(w_amax[name].max()),
                                "amax_min": float(w_amax[name].min())} for name, (axis, _) in sorted(plan.weights.items())}
    scales["quantized_nodes"] = plan.quantized_nodes
    scales["excluded_nodes"] = plan.excluded_nodes
    qdq_path = wd.path(QDQ_NAME)
    with atomic_path(qdq_path) as tmp:
        onnx.save(qdq, tmp)
    atomic_write_json(wd.path(SCALES_NAME), scales)
    return qdq_path


def _accuracy_table(report):
    """{"fp32"|"qdq": {"accuracy", "macro_f1", "per_source": {eval set: accuracy}, "texts"}} from a VerifyReport."""
    out = {}
    for side, key in (("fp32", "baseline"), ("qdq", "candidate")):
        out[side] = {"accuracy": round(report.overall[key]["accuracy"], 4),
                     "macro_f1": round(report.overall[key]["macro_f1"], 4), "texts": report.texts,
                     "per_source": {name[4:]: round(m[key]["accuracy"], 4) for name, m in report.slices.items()
                                    if name.startswith("set:")}}
    return out


def fallback_search(config, model, exclude, act_amax, w_amax, evalset, first_report, progress=_noop, show_bar=False):
    """Un-quantize the most sensitive layers one at a time until the verify gate passes.

    Sensitivity of a quantized node: how much the mean KL(FP32 || Q/DQ) on a seeded subset of the eval set
    (`calibrate.fallback_texts` texts) falls when that node alone goes back to float, everything else
    staying quantized. Nodes are then kept in float in that order, the full eval set and gate re-checked
    after each, until it passes or `calibrate.fallback_max_layers` nodes are spent. Returns a record of
    the ranking and every step (what stayed float, what it cost/bought in accuracy)."""
    import numpy as np

    from trtbuild.runners import OrtRunner
    from trtbuild.verify import drift_metrics, evaluate, run_candidate

    ccfg, vcfg = config.calibrate, config.verify
    start = time.perf_counter()

    def logits_for(extra, on):
        plan = _plan(model, tuple(exclude) + tuple(_exact(n) for n in extra), ccfg)
        data = build_qdq_model(model, plan, act_amax, w_amax).SerializeToString()
        with OrtRunner(data) as runner:
            return run_candidate(on, "Q/DQ variant", vcfg.batch_size, runner=runner)

    nodes = list(_plan(model, exclude, ccfg).quantized_nodes)
    rng = np.random.default_rng(ccfg.sample_seed)
    rows = np.sort(rng.choice(len(evalset), size=min(ccfg.fallback_texts, len(evalset)), replace=False))
    sub = evalset.subset(rows)
    kl = lambda logits: drift_metrics(sub.labels, sub.baseline, logits, bootstrap=0)["mean_kl"]  # noqa: E731
    reference = kl(logits_for((), sub))
    progress("fallback search: sensitivity of {} quantized nodes on {} eval texts (mean KL all-quantized {:.3g})".format(
        len(nodes), len(rows), reference))
    bar = _progress_bar(len(nodes), "sensitivity", unit="node") if show_bar else None
    gains = []
    try:
        for node in nodes:
            gains.append((reference - kl(logits_for((node,), sub)), node))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    ranked = sorted(gains, key=lambda g: -g[0])
    steps, chosen, report = [], [], first_report
    for gain, node in ranked[:ccfg.fallback_max_layers]:
        chosen.append(node)
        logits = logits_for(chosen, evalset)
        report = evaluate(evalset, logits, vcfg, "qdq", "Q/DQ variant", "OrtRunner", WorkDir(config.workdir).onnx)
        o = report.overall
        steps.append({"unquantized": node, "kl_gain_on_subset": gain, "float_nodes": len(chosen),
                      "macro_f1_drop_pt": o["macro_f1_drop_pt"], "flip_rate": o["flip_rate"], "mean_kl": o["mean_kl"],
                      "passed": bool(report), "failed_gates": [g.name for g in report.failed_gates()]})
        progress("  float {:>2}: {:<60} macro-F1 drop {:+.2f} pt, flips {:.2%} -> {}".format(
            len(chosen), node, o["macro_f1_drop_pt"], o["flip_rate"], "PASS" if report else "fail"))
        if report:
            break
    first = first_report.overall
    return {
        "passed": bool(report), "unquantized": chosen,
        "budget": ccfg.fallback_max_layers, "subset_texts": int(len(rows)), "quantized_nodes": len(nodes),
        "start": {"macro_f1_drop_pt": first["macro_f1_drop_pt"], "flip_rate": first["flip_rate"],
                  "mean_kl": first["mean_kl"]},
        "steps": steps,
        "sensitivity": [{"node": n, "kl_gain_on_subset": g} for g, n in ranked],
        "speed": "not measured here (calibrate runs on the CPU): build the INT8 engine and run trtbuild bench",
        "seconds": round(time.perf_counter() - start, 1),
    }


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
                    quantize_residual=placement.get("quantize_residual", False),
                    quantize_attention=placement.get("quantize_attention", False))
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
