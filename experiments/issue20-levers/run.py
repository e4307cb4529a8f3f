"""Issue 20's table of levers on the default model (CPU, ONNX Runtime): every variant is chosen and judged on
held-out *calibration* texts; the eval set (1,330 texts) is scored only to report, never to choose.

    .venv/bin/python experiments/issue20-levers/run.py [OUT.json]   (after `make model` and `trtbuild export`)
"""

import json
import os
import subprocess
import sys
import time

import numpy as np

from trtbuild.backends.ort import OrtRunner, load_onnx
from trtbuild.calibrate import collect_histograms
from trtbuild.calibrate.equalize import apply_equalization, gemm_inputs, plan_equalization, search_alpha, weight_row_max
from trtbuild.calibrate.histogram import compute_amax
from trtbuild.calibrate.holdout import Judge, agreement, split_holdout
from trtbuild.calibrate.qdq import build_qdq_model, plan_for, weight_amax
from trtbuild.calibrate.sensitivity import _variant, gemm_flops
from trtbuild.config import load_config
from trtbuild.data import load_corpus, tokenize_into_buckets
from trtbuild.verify import run_candidate
from trtbuild.verify.evalset import prepare_eval
from trtbuild.verify.metrics import drift_metrics
from trtbuild.workdir import WorkDir, check_export

CONFIG = "configs/zh-sentiment-e5-small.yaml"
out_path = sys.argv[1] if len(sys.argv) > 1 else "docs/results/calibrate-levers-e5-small-cpu.json"
VARIANTS = os.environ.get("VARIANTS", "off,0.5,0.75,0.85,0.9,0.95,search").split(",")

config = load_config(CONFIG)
ccfg = config.calibrate
wd = WorkDir(config.workdir)
record = check_export(wd.root)
model = load_onnx(wd.onnx, "")
tokenizer = wd.load_tokenizer()
buckets = config.data.usable_buckets(record["max_length"])
texts = load_corpus(config.data.calibration, "text", "label").texts
stats_texts, held_out = split_holdout(texts, ccfg.holdout, ccfg.sample_seed)
tok = tokenize_into_buckets(tokenizer, stats_texts, buckets)
names = record["inputs"]
pad = tokenizer.pad_token_id or 0
t0 = time.perf_counter()
judge = Judge(model, tokenize_into_buckets(tokenizer, held_out, buckets).batches(names, 16, pad), len(held_out))
evalset = prepare_eval(config)
masks = evalset.slices()
print("held-out", len(held_out), "eval", len(evalset), flush=True)

plan0 = plan_for(model, (), ccfg)
inputs = gemm_inputs(model, plan0)
targets = sorted(t for t, i in inputs.items() if i["equalizable"])
t = time.perf_counter()
raw_hists, chmax, samples = collect_histograms(model, plan0.activations, tok.batches(names, 16, pad),
                                               channel_tensors=targets, sample_rows=ccfg.sample_rows)
pass1 = time.perf_counter() - t
print("pass 1 (histograms + channel max + samples): {:.1f} s".format(pass1), flush=True)

opts = {"percentile": ccfg.percentile} if ccfg.method == "percentile" else {}


def amax_of(hists):
    return {n: min(float(compute_amax(h, ccfg.method, **opts)), float(h.max_abs)) for n, h in hists.items()}


def eval_scores(qdq):
    with OrtRunner(qdq.SerializeToString()) as r:
        logits = run_candidate(evalset, "variant", 32, runner=r)["logits"]
    out = {}
    for name in ("all", "set:slang/eval.jsonl", "text:slang", "text:slang-unseen"):
        if name in masks:
            m = masks[name]
            d = drift_metrics(evalset.labels[m], evalset.baseline[m], logits[m], bootstrap=0)
            out[name] = {k: d[k] for k in ("texts", "macro_f1_drop_pt", "flips", "flip_rate", "mean_kl")}
    return out


rows = {}
best = None
for v in VARIANTS:
    t = time.perf_counter()
    search_s = 0.0
    if v == "off":
        qmodel, plan, hists, eqs = model, plan0, raw_hists, []
    else:
        if v == "search":
            ts = time.perf_counter()
            alphas = {}
            for tn in targets:
                from onnx import numpy_helper
                inits = {i.name: i for i in model.graph.initializer}
                ws = [numpy_helper.to_array(inits[w]) for w in inputs[tn]["weights"]]
                alphas[tn], _ = search_alpha(samples[tn], ws, chmax[tn], weight_row_max(model, inputs[tn]["weights"]),
                                             ccfg.smooth_alphas)
            search_s = time.perf_counter() - ts
        else:
            alphas = {tn: float(v) for tn in targets}
        eqs = plan_equalization(model, inputs, chmax, alphas)
        qmodel = apply_equalization(model, eqs)
        plan = plan_for(qmodel, (), ccfg)
        hists = collect_histograms(qmodel, plan.activations, tok.batches(names, 16, pad))
    stats_s = time.perf_counter() - t
    act, w = amax_of(hists), weight_amax(qmodel, plan)
    qdq = build_qdq_model(qmodel, plan, act, w)
    fp32_eq = agreement(judge.fp32, judge.logits(qmodel)) if eqs else None
    held = judge.score(qdq)
    ev = eval_scores(qdq)
    rows[v] = {"equalized": len(eqs), "alphas": sorted(set(round(e.alpha, 2) for e in eqs)),
               "alpha_counts": {str(a): sum(1 for e in eqs if round(e.alpha, 2) == a) for a in
                                sorted(set(round(e.alpha, 2) for e in eqs))},
               "modes": {m: sum(1 for e in eqs if e.mode == m) for m in ("mul", "fold")},
               "fp32_equalized_vs_fp32_max_logit_mse": fp32_eq["logit_mse"] if fp32_eq else None,
               "held_out": held, "eval": ev, "statistics_seconds": round(stats_s, 1),
               "alpha_search_seconds": round(search_s, 1)}
    print(v, json.dumps({"held": [held["flip_rate"], held["mean_kl"]], "eval": [ev["all"]["flip_rate"],
          ev["all"]["macro_f1_drop_pt"]], "unseen": [ev.get("text:slang-unseen", {}).get("flip_rate")]}), flush=True)
    if best is None or held["mean_kl"] < rows[best[0]]["held_out"]["mean_kl"]:
        best = (v, qmodel, plan, act, w)

# per-class sensitivity of the variant the held-out KL picks
v, qmodel, plan, act, w = best
classes = gemm_inputs(qmodel, plan)
per_class = {}
for klass in sorted(set(i["class"] for i in classes.values())):
    others = [t for t in plan.activations if classes[t]["class"] != klass]
    only, _ = _variant(qmodel, plan, others, act, w)
    floated, _ = _variant(qmodel, plan, [t for t in plan.activations if classes[t]["class"] == klass], act, w)
    per_class[klass] = {"tensors": sum(1 for t in plan.activations if classes[t]["class"] == klass),
                        "only_this_class_quantized": {"held_out": judge.score(only), "eval": eval_scores(only)["all"]},
                        "this_class_float": {"held_out": judge.score(floated), "eval": eval_scores(floated)["all"]}}
    print(klass, per_class[klass]["only_this_class_quantized"]["held_out"]["flip_rate"],
          per_class[klass]["this_class_float"]["held_out"]["flip_rate"], flush=True)
# why the last fraction of a point is hard: how many eval texts sit near FP32's decision boundary, and how far
# the picked variant moves the margin
with OrtRunner(build_qdq_model(qmodel, plan, act, w).SerializeToString()) as r:
    cand = run_candidate(evalset, "variant", 32, runner=r)["logits"]
base = evalset.baseline.astype(np.float64)
m_base = base[:, 1] - base[:, 0]
m_cand = cand[:, 1].astype(np.float64) - cand[:, 0]
flipped = np.sign(m_base) != np.sign(m_cand)
margins = {"fp32_margin_below": {str(t): float((np.abs(m_base) < t).mean()) for t in (0.05, 0.1, 0.2, 0.5)},
           "mean_abs_margin_shift": float(np.abs(m_cand - m_base).mean()),
           "p95_abs_margin_shift": float(np.percentile(np.abs(m_cand - m_base), 95)),
           "flipped": int(flipped.sum()),
           "flipped_fp32_margin_median": float(np.median(np.abs(m_base[flipped]))) if flipped.any() else None,
           "flipped_fp32_margin_max": float(np.abs(m_base[flipped]).max()) if flipped.any() else None}
print("margins", margins, flush=True)
flops = gemm_flops(qmodel)
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
doc = {"what": "issue 20 levers on the default model; chosen on held-out calibration texts, eval only reported",
       "model": config.model.name, "device": "CPU (2 cores), ONNX Runtime", "tensorrt": None, "commit": commit,
       "command": "python experiments/issue20-levers/run.py", "calibration_texts": len(stats_texts),
       "held_out_texts": len(held_out), "eval_texts": len(evalset), "method": ccfg.method, "options": opts,
       "pass1_seconds": round(pass1, 1), "variants": rows, "picked_by_held_out_kl": v, "per_class": per_class,
       "margins_of_the_picked_variant": margins,
       "gemms": len(flops), "seconds": round(time.perf_counter() - t0, 1)}
with open(out_path, "w") as f:
    json.dump(doc, f, indent=1, allow_nan=False)
print("wrote", out_path)
