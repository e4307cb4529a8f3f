"""`trtbuild calibrate`: INT8 calibration from text -> explicit Q/DQ ONNX, scales.json, coverage report.

Pipeline (CPU, ONNX Runtime; no GPU):
1. Corpus -> tokens in length buckets (`trtbuild.data`), padded to the bucket length.
2. Coverage of the corpus against the slang lexicon and the eval set (`coverage.py`); a configured
   gate (`calibrate.min_slang_coverage`) stops here with exit 1 and the missing terms.
3. Statistics: the exported FP32 ONNX runs in ONNX Runtime with every tensor that feeds a
   quantized op added as a graph output; |x| of real (unpadded) token positions goes into 2048-bin
   histograms with power-of-two ranges (`histogram.py`), so the result does not depend on the
   batch size or order.
4. Scales: per-tensor amax by entropy (KL, TensorRT-style; default), minmax or percentile.
5. Q/DQ ONNX (`qdq.py`: placement and writer), written with scales.json (tensor -> amax, method,
   histogram settings, corpus hash; TensorRT-version neutral), coverage.json + coverage.html, and with
   --trt-cache a TensorRT <= 10 calibration cache. `calibrate()` ends there; the accuracy gate after it
   and the fallback search live in `fallback.py`.
"""

import hashlib
import os
import random
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

from trtbuild import __version__
from trtbuild._util import Result, noop, progress_bar
from trtbuild.calibrate.qdq import plan_for, scales_document, weight_amax, write_calibration
from trtbuild.config import METHODS
from trtbuild.data import check_token_ids
from trtbuild.errors import EXIT_GATE, EXIT_OK, TrtbuildError
from trtbuild.workdir import SCALES_FORMAT, WorkDir, check_export, locked

FEW_TEXTS = 100  # fewer calibration texts than this get a warning


class CoverageGateError(TrtbuildError):
    """The calibration corpus misses too much of the slang the eval set uses (exit 1)."""


# ---------------------------------------------------------------------------------------------
# Statistics with ONNX Runtime

def collect_histograms(model, tensors, batches, bins=2048, progress_bar=None):
    """Run the model over `batches`, histogramming |x| of each tensor at real token positions."""
    import onnx

    from trtbuild.backends.ort import ort_session
    from trtbuild.calibrate.histogram import AbsHistogram

    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    existing = {o.name for o in augmented.graph.output}
    names = sorted(tensors)
    for name in names:
        if name not in existing:
            augmented.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort_session(augmented.SerializeToString(), basic_optimizations=True)
    hists = {name: AbsHistogram(bins=bins) for name in names}
    for batch in batches:
        outs = session.run(names, batch.inputs)
        mask = batch.mask
        b, s = mask.shape
        for name, arr in zip(names, outs):
            if arr.ndim >= 2 and arr.shape[0] == b and arr.shape[1] == s:
                arr = arr[mask]  # padded positions carry no real activations
            hists[name].update(arr)
        if progress_bar is not None:
            progress_bar.update(len(batch.rows))
    return hists


def corpus_hash(texts):
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


@dataclass
class CalibrateResult(Result):
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

    @property
    def exit_code(self):
        """4 when the verify gate on the Q/DQ model failed (after the fallback search, if it ran)."""
        return EXIT_GATE if self.verify is not None and not self.verify["passed"] else EXIT_OK

    def summary(self):
        lines = ["calibrated {} texts by {} in {:.1f} s (statistics {:.1f} s); {} truncated".format(
            self.texts, self.method, self.seconds, self.calibration_seconds, self.truncated),
            "  {:<14} {}".format("Q/DQ ONNX", self.qdq_onnx),
            "  {:<14} {} ({} activations per tensor, {} weights per channel, {} nodes quantized)".format(
                "scales", self.scales, self.activations, self.weights, self.quantized_nodes)]
        if self.coverage_json:
            lines.append("  {:<14} {} (+ .html)".format("coverage", self.coverage_json))
        if self.cache:
            lines.append("  {:<14} {}".format("TRT cache", self.cache))
        if self.accuracy:
            fp32, qdq = self.accuracy["fp32"], self.accuracy["qdq"]
            lines.append("accuracy on {} eval texts (ONNX Runtime CPU):".format(fp32["texts"]))
            lines.append("  {:<44} {:>7} {:>7}".format("eval set", "FP32", "Q/DQ"))
            for src in fp32["per_source"]:
                lines.append("  {:<44} {:>6.1%} {:>6.1%}".format(src, fp32["per_source"][src], qdq["per_source"][src]))
            lines.append("  {:<44} {:>6.1%} {:>6.1%}".format("all", fp32["accuracy"], qdq["accuracy"]))
        if self.verify:
            gate = "passed" if self.verify["passed"] else "FAILED ({})".format("; ".join(
                g["name"] for g in self.verify["gates"] if not g["passed"]))
            lines.append("verify gate {}: {}".format(gate, self.verify["paths"].get("html", "")))
        if self.fallback:
            fb = self.fallback
            lines.append("fallback: {} node(s) kept in float{}: {}".format(
                len(fb["unquantized"]), "" if fb["passed"] else " and the gate still fails (budget {})".format(
                    fb["budget"]), ", ".join(fb["unquantized"])))
        return "\n".join(lines)


def calibrate(config, corpus_paths=None, method=None, exclude=None, max_texts=None, batch_size=None,
              on_bad_utf8=None, trt_cache=None, progress=noop, show_bar=True):
    """Calibrate `config.workdir`'s export over the corpus; returns a CalibrateResult (raises on failure) once
    model.qdq.onnx and scales.json are written. The accuracy gate after it: `fallback.calibrate_and_check`."""
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
    wd = WorkDir(config.workdir)
    with locked(wd.root, create=False):
        return _calibrate(config, wd, paths, method, exclude, batch_size, max_texts, on_bad_utf8, trt_cache, progress,
                          show_bar)


def _calibrate(config, wd, paths, method, exclude, batch_size, max_texts, on_bad_utf8, trt_cache, progress, show_bar):
    from trtbuild.backends.ort import load_onnx

    from trtbuild.calibrate.coverage import coverage_report, write_coverage
    from trtbuild.calibrate.histogram import compute_amax
    from trtbuild.data import load_corpus, load_lexicon, tokenize_into_buckets

    ccfg = config.calibrate
    start = time.perf_counter()
    record = check_export(wd.root)
    input_names = record["inputs"]
    buckets = config.data.usable_buckets(record["max_length"])

    progress("[1/5] loading the corpus ({} file(s))".format(len(paths)))
    corpus = load_corpus(paths, config.data.text_column, config.data.label_column, None, on_bad_utf8)
    for line in corpus.warnings():
        progress("  warning: " + line)
    texts = corpus.texts
    if max_texts is not None and len(texts) > max_texts:
        keep = sorted(random.Random(ccfg.sample_seed).sample(range(len(texts)), max_texts))
        texts = [texts[i] for i in keep]
        progress("  sampled {} of {} texts (seed {})".format(max_texts, len(corpus.texts), ccfg.sample_seed))
    if len(texts) < FEW_TEXTS:
        progress("  warning: calibrating from {} text(s) only; scales from so few rarely hold on real traffic: "
                 "give a few hundred".format(len(texts)))
    tokenizer = wd.load_tokenizer()
    tok = tokenize_into_buckets(tokenizer, texts, buckets)
    check_token_ids(tok, record, wd.root)
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
                                   min_slang_coverage=ccfg.min_slang_coverage, suspect=corpus.suspect)
        for line in coverage.summary_lines():
            progress("  " + line)
        if not coverage.passed:  # the report of a rejected corpus goes to reports/, beside no model
            os.makedirs(wd.reports, exist_ok=True)
            _, html = write_coverage(coverage, wd.reports, stem="coverage-rejected")
            raise CoverageGateError(coverage.failure_message() + "; widen the calibration corpus (details in {})"
                                    .format(html))
    else:
        progress("  skipped: no data.lexicon in the config")

    progress("[3/5] activation statistics with ONNX Runtime (CPU)")
    model = load_onnx(wd.onnx, "trtbuild export CHECKPOINT -o {} --force".format(wd.root))
    plan = plan_for(model, exclude, ccfg)
    if not plan.activations:
        raise TrtbuildError("nothing to quantize in {} (all MatMul/Gemm excluded?)".format(wd.onnx))
    t_stats = time.perf_counter()
    bar = progress_bar(len(texts), "calibrating") if show_bar else None
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

    progress("[5/5] writing {}, {}".format(os.path.basename(wd.qdq_onnx), os.path.basename(wd.scales)))
    scales = {
        "format": SCALES_FORMAT, "trtbuild": __version__, "method": method, "options": options,
        "histogram": {"bins": ccfg.num_bins, "range": "power of two >= max |x|, exact merge",
                      "positions": "real tokens only (attention_mask == 1)"},
        "corpus": {"files": paths, "texts": len(texts), "sha256": corpus_hash(texts), "buckets": {
            str(b): len(r) for b, r in sorted(tok.buckets.items())}, "truncated": tok.truncated},
        "onnx_sha256": record["sha256"]["onnx"],
    }
    stats = {name: (float(h.max_abs), int(h.count)) for name, h in hists.items()}
    scales = scales_document(scales, plan, exclude, ccfg, act_amax, w_amax, stats)
    inputs = {"onnx": record["sha256"]["onnx"], "tokenizer": record["sha256"]["tokenizer"],
              "corpus": scales["corpus"]["sha256"], "texts": len(texts)}
    qdq_path = write_calibration(wd, model, plan, scales, inputs, coverage=coverage, trt_cache=trt_cache)
    cache_path = wd.calibration_cache if trt_cache else None
    cov_json, cov_html = (wd.coverage_json, wd.coverage_html) if coverage is not None else (None, None)

    return CalibrateResult(
        workdir=wd.root, qdq_onnx=qdq_path, scales=wd.scales, coverage_json=cov_json,
        coverage_html=cov_html, cache=cache_path, method=method, texts=len(texts), truncated=tok.truncated,
        skipped_lines=corpus.skipped_lines, buckets={b: len(r) for b, r in sorted(tok.buckets.items())},
        activations=len(plan.activations), weights=len(plan.weights), quantized_nodes=len(plan.quantized_nodes),
        excluded_nodes=plan.excluded_nodes, seconds=round(time.perf_counter() - start, 2),
        calibration_seconds=round(calibration_seconds, 2),
        coverage=coverage.to_dict() if coverage is not None else None)
