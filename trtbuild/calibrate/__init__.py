"""`trtbuild calibrate`: INT8 calibration from text -> explicit Q/DQ ONNX, scales.json, coverage and sensitivity.

Pipeline (CPU, ONNX Runtime; no GPU):
1. Corpus -> tokens in length buckets (`trtbuild.data`), padded to the bucket length; `calibrate.holdout`
   (20 %) of the texts is held out of the statistics to judge the choices (`holdout.py`).
2. Coverage of the corpus against the slang lexicon (the packaged one by default) and the eval set
   (`coverage.py`); a configured gate (`calibrate.min_slang_coverage`) stops here with exit 1.
3. Equalization (`equalize.py`, on by default): a pass for the per-channel max |x| and a row sample of every
   GEMM input, alpha searched per tensor, the factors folded into the weights and `1/s` applied exactly.
4. Statistics on the (equalized) graph: every tensor that feeds a quantized op is an extra graph output;
   |x| of real (unpadded) token positions goes into 2048-bin histograms with power-of-two ranges
   (`histogram.py`), so the result does not depend on the batch size or order. amax by entropy (KL,
   TensorRT-style; default), minmax or percentile.
5. The held-out judge scores the Q/DQ model against FP32; per-class runs and, above the target, the fallback
   (`sensitivity.py`) decide which tensors stay float.
6. model.qdq.onnx (`qdq.py`), scales.json (amax, factors, the held-out record; TensorRT-version neutral),
   coverage.json/.html and sensitivity.json/.html (`report.py`), committed as one unit. `calibrate()` ends
   there; the verify gate after it lives in `fallback.py`.
"""

import dataclasses
import hashlib
import os
import time
import zlib
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

import numpy as np

from trtbuild import __version__
from trtbuild._util import Result, noop, progress_bar
from trtbuild.calibrate.equalize import apply_equalization, gemm_inputs, plan_equalization, search_alpha, \
    weight_row_max
from trtbuild.calibrate.holdout import MIN_HOLDOUT, Judge, split_holdout
from trtbuild.calibrate.qdq import build_qdq_model, exact, plan_for, scales_document, weight_amax, write_calibration
from trtbuild.calibrate.report import sensitivity_document
from trtbuild.calibrate.sensitivity import class_report, fallback_search, gemm_flops
from trtbuild.config import METHODS
from trtbuild.data import check_token_ids, sample_texts
from trtbuild.errors import EXIT_GATE, EXIT_OK, TrtbuildError
from trtbuild.workdir import SCALES_FORMAT, SENSITIVITY_JSON, WorkDir, check_export, locked

FEW_TEXTS = 100  # fewer calibration texts than this get a warning


class CoverageGateError(TrtbuildError):
    """The calibration corpus misses too much of the slang the eval set uses (exit 1)."""


# ---------------------------------------------------------------------------------------------
# Statistics with ONNX Runtime

def collect_histograms(model, tensors, batches, bins=2048, progress_bar=None, channel_tensors=(), sample_rows=0,
                       seed=0):
    """Run the model over `batches`, histogramming |x| of each tensor at real token positions. With
    `channel_tensors`, returns (histograms, per-channel max |x| {tensor: float64 [channels]}, row samples
    {tensor: float32 [<= sample_rows, channels]}) instead: the statistics equalization needs."""
    import onnx

    from trtbuild.backends.ort import ort_session
    from trtbuild.calibrate.histogram import AbsHistogram

    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    existing = {o.name for o in augmented.graph.output}
    names = sorted(set(tensors) | set(channel_tensors))
    for name in names:
        if name not in existing:
            augmented.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort_session(augmented.SerializeToString(), basic_optimizations=True)
    hists = {name: AbsHistogram(bins=bins) for name in tensors}
    chmax, samples, keys, streams = {}, {}, {}, {}
    for batch in batches:
        outs = session.run(names, batch.inputs)
        mask = batch.mask
        b, s = mask.shape
        for name, arr in zip(names, outs):
            if arr.ndim >= 2 and arr.shape[0] == b and arr.shape[1] == s:
                arr = arr[mask]  # padded positions carry no real activations
            if name in hists:
                hists[name].update(arr)
            if name in channel_tensors and arr.ndim == 2:
                m = np.abs(arr).max(axis=0).astype(np.float64)
                chmax[name] = m if name not in chmax else np.maximum(chmax[name], m)
                if sample_rows:  # reservoir sample of token rows
                    _reservoir(samples, keys, streams, name, arr, sample_rows, seed)
        if progress_bar is not None:
            progress_bar.update(len(batch.rows))
    if channel_tensors:
        return hists, chmax, samples
    return hists


def _reservoir(samples, keys, streams, name, rows, k, seed):
    """A uniform sample of k rows over all batches: every row gets a random key, the k smallest keys stay. The keys
    come from one stream per tensor, so the sample does not depend on the batch size."""
    if name not in streams:
        streams[name] = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    new_keys = streams[name].random(len(rows))
    if name in samples:
        rows = np.concatenate([samples[name], rows.astype(np.float32)])
        new_keys = np.concatenate([keys[name], new_keys])
    keep = np.argsort(new_keys, kind="stable")[:k]  # sorted by key: the same rows in the same order for any batching
    rows, new_keys = rows[keep], new_keys[keep]
    samples[name], keys[name] = rows.astype(np.float32), new_keys


def _equalize(model, plan, ccfg, tok, input_names, batch_size, pad_id, show_bar, progress):
    """Pass 1 of the statistics: per-channel max |x| and a row sample of every GEMM input, then the equalization
    factors (alpha fixed or searched per tensor on the sample rows). Returns (equalizations, alpha search record)."""
    from onnx import numpy_helper

    inputs = gemm_inputs(model, plan)
    targets = sorted(t for t, info in inputs.items() if info["equalizable"])
    if not targets:
        progress("  equalization: no GEMM input can be equalized in this graph")
        return [], {}, {}
    bar = progress_bar(sum(len(r) for r in tok.buckets.values()), "channel max") if show_bar else None
    try:
        _, chmax, samples = collect_histograms(
            model, (), tok.batches(input_names, batch_size, pad_id=pad_id), channel_tensors=targets,
            sample_rows=ccfg.sample_rows if ccfg.smooth_alpha is None else 0, seed=ccfg.sample_seed, progress_bar=bar)
    finally:
        if bar is not None:
            bar.close()
    inits = {i.name: i for i in model.graph.initializer}
    alphas, record = {}, {}
    for t in targets:
        if t not in chmax:
            continue
        if ccfg.smooth_alpha is not None:
            alphas[t] = ccfg.smooth_alpha
            continue
        weights = [numpy_helper.to_array(inits[w]) for w in inputs[t]["weights"]]
        best, errors = search_alpha(samples[t], weights, chmax[t], weight_row_max(model, inputs[t]["weights"]),
                                    ccfg.smooth_alphas)
        alphas[t] = best
        record[t] = {"class": inputs[t]["class"], "layer": inputs[t]["layer"], "alpha": best,
                     "relative_error": {str(k): float(v) for k, v in errors.items()}}
    equalizations = plan_equalization(model, inputs, chmax, alphas)
    by_mode = {}
    for e in equalizations:
        by_mode[e.mode] = by_mode.get(e.mode, 0) + 1
    chosen = sorted(set(round(e.alpha, 3) for e in equalizations))
    progress("  equalized {} of {} GEMM inputs ({}), alpha {}".format(
        len(equalizations), len(targets), ", ".join("{} {}".format(v, k) for k, v in sorted(by_mode.items())),
        chosen[0] if len(chosen) == 1 else "searched per tensor: {}".format(", ".join(str(a) for a in chosen))))
    return equalizations, record, chmax


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
    fallback: Optional[dict] = None  # the fallback search record (held-out calibration texts)
    equalized: int = 0  # GEMM inputs equalized (SmoothQuant)
    held_out: Optional[dict] = None  # agreement of the final Q/DQ model with FP32 on the held-out calibration texts
    gemm_flops_int8_share: Optional[float] = None  # share of the GEMM FLOPs (weights) that stay INT8
    sensitivity_json: Optional[str] = None
    timings: Optional[Dict[str, float]] = None  # seconds per stage (corpus, coverage, equalization, statistics, ...)

    def to_dict(self):
        d = asdict(self)
        d["buckets"] = {str(k): v for k, v in self.buckets.items()}
        return d

    @property
    def exit_code(self):
        """4 when the verify gate on the Q/DQ model failed (after the fallback search, if it ran)."""
        return EXIT_GATE if self.verify is not None and not self.verify["passed"] else EXIT_OK

    def summary(self):
        lines = ["calibrated {} texts by {} in {:.1f} s ({}); {} truncated".format(
            self.texts, self.method, self.seconds, ", ".join("{} {:.1f} s".format(k, v) for k, v in
                                                             (self.timings or {}).items()), self.truncated),
            "  {:<14} {}".format("Q/DQ ONNX", self.qdq_onnx),
            "  {:<14} {} ({} activations per tensor, {} weights per channel, {} nodes quantized)".format(
                "scales", self.scales, self.activations, self.weights, self.quantized_nodes)]
        if self.coverage_json:
            lines.append("  {:<14} {} (+ .html)".format("coverage", self.coverage_json))
        if self.sensitivity_json:
            lines.append("  {:<14} {} (+ .html; {:.1%} of the GEMM FLOPs in INT8)".format(
                "sensitivity", self.sensitivity_json, self.gemm_flops_int8_share or 0.0))
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
        if self.held_out:
            lines.append("held-out calibration texts ({}): {:.2%} flips against FP32, mean KL {:.3g}{}".format(
                self.held_out["texts"], self.held_out["flip_rate"], self.held_out["mean_kl"],
                "; {} GEMM inputs equalized".format(self.equalized) if self.equalized else ""))
        if self.fallback:
            fb = self.fallback
            lines.append("fallback: {} tensor(s) kept in float ({:.1%} of the GEMM FLOPs){}: {}".format(
                len(fb["float_tensors"]), fb["gemm_flops_float_share"], "" if fb["passed"] else
                " and the held-out target {:.2%} is still missed (budget {})".format(fb["target"], fb["budget"]),
                ", ".join(fb["float_tensors"])))
        return "\n".join(lines)


def calibrate(config, corpus_paths=None, method=None, exclude=None, max_texts=None, batch_size=None,
              on_bad_utf8=None, trt_cache=None, auto_fallback=None, progress=noop, show_bar=True):
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
    if trt_cache and ccfg.equalize:
        raise TrtbuildError("--trt-cache describes model.onnx's own tensors, but equalization (on by default) "
                            "calibrates an equalized graph: build from model.qdq.onnx, or add --no-equalize")
    trt_version = None
    if trt_cache:  # the cache's header names a TensorRT version: the one installed here, else 8.6.0
        from trtbuild.backends.trt import installed_version

        trt_version = installed_version() or "8.6.0"
        if int(trt_version.split(".")[0]) >= 11:
            raise TrtbuildError("--trt-cache: TensorRT {} has no implicit INT8 calibration (removed in 11); build "
                                "from model.qdq.onnx".format(trt_version))
    if auto_fallback is not None and auto_fallback != ccfg.auto_fallback:
        config = config.replace(calibrate=dataclasses.replace(ccfg, auto_fallback=auto_fallback))
    paths = list(corpus_paths or config.data.calibration)
    wd = WorkDir(config.workdir)
    with locked(wd.root, create=False):
        return _calibrate(config, wd, paths, method, exclude, batch_size, max_texts, on_bad_utf8, trt_cache, progress,
                          show_bar, trt_version)


def _calibrate(config, wd, paths, method, exclude, batch_size, max_texts, on_bad_utf8, trt_cache, progress, show_bar,
               trt_version=None):
    from trtbuild.backends.ort import load_onnx

    from trtbuild.calibrate.coverage import coverage_report, write_coverage
    from trtbuild.calibrate.histogram import compute_amax
    from trtbuild.data import lexicon_source, load_corpus, load_lexicon, resolve_lexicon, tokenize_into_buckets

    ccfg = config.calibrate
    start = time.perf_counter()
    record = check_export(wd.root)
    input_names = record["inputs"]
    buckets = config.data.usable_buckets(record["max_length"])

    progress("[1/5] loading the corpus ({} file(s))".format(len(paths)))
    corpus = load_corpus(paths, config.data.text_column, config.data.label_column, None, on_bad_utf8)
    for line in corpus.warnings():
        progress("  warning: " + line)
    texts = sample_texts(corpus.texts, max_texts, ccfg.sample_seed)
    if len(texts) < len(corpus.texts):
        progress("  sampled {} of {} texts (seed {})".format(max_texts, len(corpus.texts), ccfg.sample_seed))
    if len(texts) < FEW_TEXTS:
        progress("  warning: calibrating from {} text(s) only; scales from so few rarely hold on real traffic: "
                 "give a few hundred".format(len(texts)))
    all_texts = texts
    texts, held_out = split_holdout(all_texts, ccfg.holdout, ccfg.sample_seed)
    tokenizer = wd.load_tokenizer()
    tok = tokenize_into_buckets(tokenizer, texts, buckets)
    check_token_ids(tok, record, wd.root)
    if held_out:
        progress("  {} held out to judge the choices (calibrate.holdout {:g}); statistics from the other {}".format(
            len(held_out), ccfg.holdout, len(texts)))
    elif ccfg.holdout > 0:
        progress("  warning: too few texts to hold {:.0%} out ({} held-out texts at least): no held-out check, no "
                 "fallback".format(ccfg.holdout, MIN_HOLDOUT))
    progress("  {} texts; per bucket {}; {} longer than {} tokens (truncated)".format(
        len(texts), ", ".join("{}: {}".format(b, len(r)) for b, r in sorted(tok.buckets.items())),
        tok.truncated, buckets[-1]))

    timings = {"corpus": time.perf_counter() - start}
    progress("[2/5] coverage of the corpus against the slang lexicon and the eval set")
    coverage = None
    eval_corpus = None
    if config.data.eval:
        eval_corpus = load_corpus(config.data.eval, config.data.text_column, config.data.label_column, None, "skip")
    lexicon = load_lexicon(resolve_lexicon(config.data.lexicon))  # the packaged lexicon without data.lexicon
    coverage = coverage_report(all_texts, lexicon, tokenizer, buckets=tuple(buckets),
                               eval_texts=eval_corpus.texts if eval_corpus else None,
                               min_slang_coverage=ccfg.min_slang_coverage, suspect=corpus.suspect,
                               lexicon_source=lexicon_source(config.data.lexicon))
    for line in coverage.summary_lines():
        progress("  " + line)
    if not coverage.passed:  # the report of a rejected corpus goes to reports/, beside no model
        os.makedirs(wd.reports, exist_ok=True)
        _, html = write_coverage(coverage, wd.reports, stem="coverage-rejected")
        raise CoverageGateError(coverage.failure_message() + "; widen the calibration corpus (details in {})"
                                .format(html))

    timings["coverage"] = time.perf_counter() - start - sum(timings.values())
    progress("[3/5] activation statistics with ONNX Runtime (CPU)")
    model = load_onnx(wd.onnx, "trtbuild export CHECKPOINT -o {} --force".format(wd.root))
    plan = plan_for(model, exclude, ccfg)
    if not plan.activations:
        raise TrtbuildError("nothing to quantize in {} (all MatMul/Gemm excluded?)".format(wd.onnx))
    pad_id = tokenizer.pad_token_id or 0
    t_stats = time.perf_counter()
    equalizations, alpha_search, chmax = [], {}, {}
    if ccfg.equalize:
        equalizations, alpha_search, chmax = _equalize(model, plan, ccfg, tok, input_names, batch_size, pad_id, show_bar,
                                                     progress)
    timings["equalization"] = time.perf_counter() - t_stats
    qmodel = apply_equalization(model, equalizations) if equalizations else model
    plan = plan_for(qmodel, exclude, ccfg)
    bar = progress_bar(len(texts), "statistics" if equalizations else "calibrating") if show_bar else None
    try:
        hists = collect_histograms(qmodel, plan.activations, tok.batches(input_names, batch_size, pad_id=pad_id),
                                   bins=ccfg.num_bins, progress_bar=bar)
    finally:
        if bar is not None:
            bar.close()

    progress("[4/5] scales by {} ({} activations, {} weights per channel)".format(
        method, len(plan.activations), len(plan.weights)))
    options = {"percentile": ccfg.percentile} if method == "percentile" else {}
    # a threshold past the largest value seen only wastes int8 levels: clip to max |x|
    act_amax = {name: min(float(compute_amax(h, method, **options)), float(h.max_abs)) for name, h in hists.items()}
    w_amax = weight_amax(qmodel, plan)
    stats = {name: (float(h.max_abs), int(h.count)) for name, h in hists.items()}
    calibration_seconds = time.perf_counter() - t_stats
    timings["statistics"] = calibration_seconds - timings["equalization"]

    judged = fallback = per_class = None
    if held_out:
        judge = Judge(model, tokenize_into_buckets(tokenizer, held_out, buckets).batches(input_names, batch_size, pad_id),
                      len(held_out))
        judged = judge.score(build_qdq_model(qmodel, plan, act_amax, w_amax))
        progress("  held-out calibration texts ({}): {:.2%} flips against FP32, mean KL {:.3g}".format(
            len(held_out), judged["flip_rate"], judged["mean_kl"]))
        target = ccfg.fallback_target if ccfg.fallback_target is not None else 0.8 * config.verify.max_flip_rate
        resolvable = 1.0 / len(held_out) <= target
        if ccfg.auto_fallback and judged["flip_rate"] > target and not resolvable:
            progress("  warning: one flip in {} held-out texts is already above the fallback target {:.2%}: no fallback "
                     "search (give more calibration texts, or raise calibrate.fallback_target)".format(
                         len(held_out), target))
        if ccfg.auto_fallback and judged["flip_rate"] > target and resolvable:
            fallback = fallback_search(qmodel, plan, act_amax, w_amax, judge, target, ccfg.fallback_max_layers,
                                       classes=gemm_inputs(qmodel, plan), first=judged, progress=progress)
            if fallback["float_tensors"]:
                exclude = tuple(exclude) + tuple(exact(n) for n in fallback["float_nodes"])
                plan = plan_for(qmodel, exclude, ccfg)
                act_amax = {n: act_amax[n] for n in plan.activations}
                w_amax = weight_amax(qmodel, plan)
                judged = fallback["final"]
                progress("  fallback: {} tensor(s) back in float; held-out flips {:.2%}".format(
                    len(fallback["float_tensors"]), judged["flip_rate"]))
            per_class = fallback["per_class"]
        elif ccfg.sensitivity:
            per_class = class_report(qmodel, plan, act_amax, w_amax, judge, gemm_inputs(qmodel, plan), progress)
    flops = gemm_flops(qmodel)  # every weighted GEMM: the total both FLOP shares are taken of
    int8_share = sum(flops.get(n, 0) for n in plan.quantized_nodes) / float(sum(flops.values()) or 1)
    sensitivity = sensitivity_document(judged, per_class, equalizations, chmax, fallback, round(int8_share, 4),
                                       len(flops), {"holdout": ccfg.holdout, "equalize": ccfg.equalize,
                                                    "smooth_alpha": ccfg.smooth_alpha, "method": method})

    timings["held_out"] = time.perf_counter() - start - sum(timings.values())
    progress("[5/5] writing {}, {}".format(os.path.basename(wd.qdq_onnx), os.path.basename(wd.scales)))
    scales = {
        "format": SCALES_FORMAT, "trtbuild": __version__, "method": method, "options": options,
        "histogram": {"bins": ccfg.num_bins, "range": "power of two >= max |x|, exact merge",
                      "positions": "real tokens only (attention_mask == 1)"},
        "corpus": {"files": paths, "texts": len(texts), "sha256": corpus_hash(all_texts), "buckets": {
            str(b): len(r) for b, r in sorted(tok.buckets.items())}, "truncated": tok.truncated,
            "held_out": len(held_out)},
        "onnx_sha256": record["sha256"]["onnx"],
        "equalization": {"tensors": [e.to_dict() for e in equalizations], "alpha_search": alpha_search,
                         "smooth_alpha": ccfg.smooth_alpha} if equalizations else None,
        "held_out": judged, "fallback": fallback,
    }
    scales = scales_document(scales, plan, exclude, ccfg, act_amax, w_amax, stats)
    inputs = {"onnx": record["sha256"]["onnx"], "tokenizer": record["sha256"]["tokenizer"],
              "corpus": scales["corpus"]["sha256"], "texts": len(all_texts)}
    qdq_path = write_calibration(wd, model, plan, scales, inputs, coverage=coverage, trt_cache=trt_cache,
                                 qmodel=qmodel, sensitivity=sensitivity, fp8=ccfg.precision == "fp8",
                                 trt_version=trt_version or "8.6.0")
    timings["write"] = time.perf_counter() - start - sum(timings.values())
    cache_path = wd.calibration_cache if trt_cache else None
    cov_json, cov_html = (wd.coverage_json, wd.coverage_html) if coverage is not None else (None, None)

    return CalibrateResult(
        workdir=wd.root, qdq_onnx=qdq_path, scales=wd.scales, coverage_json=cov_json,
        coverage_html=cov_html, cache=cache_path, method=method, texts=len(texts), truncated=tok.truncated,
        skipped_lines=corpus.skipped_lines, buckets={b: len(r) for b, r in sorted(tok.buckets.items())},
        activations=len(plan.activations), weights=len(plan.weights), quantized_nodes=len(plan.quantized_nodes),
        excluded_nodes=plan.excluded_nodes, seconds=round(time.perf_counter() - start, 2),
        calibration_seconds=round(calibration_seconds, 2), equalized=len(equalizations), held_out=judged,
        fallback=fallback, timings={k: round(v, 1) for k, v in timings.items()}, gemm_flops_int8_share=round(int8_share, 4), sensitivity_json=wd.path(SENSITIVITY_JSON),
        coverage=coverage.to_dict() if coverage is not None else None)
