"""The accuracy gate after calibration, and the fallback search when it fails: the one module that uses
both `trtbuild.calibrate` and `trtbuild.verify`.

`calibrate_and_check` is what `trtbuild calibrate` runs: calibrate (model.qdq.onnx + scales.json), then,
with a labelled eval set, verify the Q/DQ model against FP32 in ONNX Runtime (report in
WORKDIR/reports/verify-qdq.*). With `auto_fallback`, a failed gate starts `fallback_search`: the most
sensitive quantized nodes go back to float one at a time until the gate passes or
`calibrate.fallback_max_layers` is spent; the outputs then hold the final placement, and scales.json
records it (`--from-scales` reproduces it).
"""

import time

import numpy as np

from trtbuild._util import noop, progress_bar
from trtbuild.backends.ort import OrtRunner, load_onnx
from trtbuild.calibrate import calibrate
from trtbuild.calibrate.qdq import build_qdq_model, exact, plan_for, read_scales, scales_document, weight_amax, \
    write_calibration
from trtbuild.errors import TrtbuildError
from trtbuild.verify import run_candidate, verify_candidate
from trtbuild.verify.evalset import prepare_eval
from trtbuild.verify.metrics import drift_metrics
from trtbuild.verify.report import evaluate
from trtbuild.workdir import CACHE_NAME, COVERAGE_HTML, COVERAGE_JSON, WorkDir, check_calibration, check_export, \
    locked


def calibrate_and_check(config, evaluate_qdq=True, auto_fallback=None, progress=noop, show_bar=True, **options):
    """`calibrate(config, **options)`, then the verify gate on the Q/DQ model (and the fallback search when it
    fails and `auto_fallback`); returns the CalibrateResult with its accuracy, verify and fallback records (its
    exit code is 4 when the gate fails). With data.eval set, a check that cannot run is an error, not a skip."""
    ccfg = config.calibrate
    auto_fallback = ccfg.auto_fallback if auto_fallback is None else auto_fallback
    if auto_fallback and not config.data.eval:
        raise TrtbuildError("--auto-fallback needs a labelled eval set: set data.eval in the config or pass --eval FILE")
    with locked(config.workdir, create=False):
        start = time.perf_counter()
        result = calibrate(config, progress=progress, show_bar=show_bar, **options)
        if not (evaluate_qdq or auto_fallback) or not config.data.eval:
            return result
        evalset = prepare_eval(config, progress=progress, show_bar=show_bar)
        progress("verifying the Q/DQ model against FP32 in ONNX Runtime on {} eval texts".format(len(evalset)))
        report = verify_candidate(config, "qdq", evalset=evalset, progress=progress, show_bar=show_bar)
        progress("  " + report.summary())
        if auto_fallback and not report:
            result.fallback, report = _fall_back(config, evalset, report, result, progress, show_bar)
        result.accuracy = _accuracy_table(report)
        result.verify = report.to_dict()
        result.seconds = round(time.perf_counter() - start, 2)
        return result


def _fall_back(config, evalset, report, result, progress, show_bar):
    """Run the fallback search on the committed calibration and commit the placement it found."""
    wd = WorkDir(config.workdir)
    ccfg = config.calibrate
    record = check_export(wd.root)
    cal = check_calibration(wd.root, record)
    scales = read_scales(wd, record)
    model = load_onnx(wd.onnx, "trtbuild export CHECKPOINT -o {} --force".format(wd.root))
    exclude = tuple(scales["placement"]["exclude"])
    act_amax = {name: float(a["amax"]) for name, a in scales["activations"].items()}
    stats = {name: (float(a["max_abs"]), int(a["count"])) for name, a in scales["activations"].items()}
    w_amax = weight_amax(model, plan_for(model, exclude, ccfg))
    fallback = fallback_search(config, model, exclude, act_amax, w_amax, evalset, report, progress=progress,
                               show_bar=show_bar)
    if fallback["unquantized"]:
        exclude = exclude + tuple(exact(n) for n in fallback["unquantized"])
        plan = plan_for(model, exclude, ccfg)
        base = {k: v for k, v in scales.items() if k not in ("placement", "activations", "weights", "quantized_nodes",
                                                             "excluded_nodes")}
        base["fallback"] = fallback
        document = scales_document(base, plan, exclude, ccfg, act_amax, w_amax, stats)
        write_calibration(wd, model, plan, document, cal["inputs"], keep=(COVERAGE_JSON, COVERAGE_HTML, CACHE_NAME))
        result.activations, result.weights = len(plan.activations), len(plan.weights)
        result.quantized_nodes, result.excluded_nodes = len(plan.quantized_nodes), plan.excluded_nodes
        report = verify_candidate(config, "qdq", evalset=evalset, progress=progress, show_bar=show_bar)
        progress("  after the fallback: " + report.summary())
    return fallback, report


def _accuracy_table(report):
    """{"fp32"|"qdq": {"accuracy", "macro_f1", "per_source": {eval set: accuracy}, "texts"}} from a VerifyReport."""
    out = {}
    for side, key in (("fp32", "baseline"), ("qdq", "candidate")):
        out[side] = {"accuracy": round(report.overall[key]["accuracy"], 4),
                     "macro_f1": round(report.overall[key]["macro_f1"], 4), "texts": report.texts,
                     "per_source": {name[4:]: round(m[key]["accuracy"], 4) for name, m in report.slices.items()
                                    if name.startswith("set:")}}
    return out


def fallback_search(config, model, exclude, act_amax, w_amax, evalset, first_report, progress=noop, show_bar=False):
    """Un-quantize the most sensitive layers one at a time until the verify gate passes.

    Sensitivity of a quantized node: how much the mean KL(FP32 || Q/DQ) on a seeded subset of the eval set
    (`calibrate.fallback_texts` texts) falls when that node alone goes back to float, everything else
    staying quantized. Nodes are then kept in float in that order, the full eval set and gate re-checked
    after each, until it passes or `calibrate.fallback_max_layers` nodes are spent. Returns a record of
    the ranking and every step (what stayed float, what it cost/bought in accuracy)."""
    ccfg, vcfg = config.calibrate, config.verify
    start = time.perf_counter()

    def logits_for(extra, on):
        plan = plan_for(model, tuple(exclude) + tuple(exact(n) for n in extra), ccfg)
        data = build_qdq_model(model, plan, act_amax, w_amax).SerializeToString()
        with OrtRunner(data) as runner:
            return run_candidate(on, "Q/DQ variant", vcfg.batch_size, runner=runner)["logits"]

    nodes = list(plan_for(model, exclude, ccfg).quantized_nodes)
    rng = np.random.default_rng(ccfg.sample_seed)
    rows = np.sort(rng.choice(len(evalset), size=min(ccfg.fallback_texts, len(evalset)), replace=False))
    sub = evalset.subset(rows)
    kl = lambda logits: drift_metrics(sub.labels, sub.baseline, logits, bootstrap=0)["mean_kl"]  # noqa: E731
    reference = kl(logits_for((), sub))
    progress("fallback search: sensitivity of {} quantized nodes on {} eval texts (mean KL all-quantized {:.3g})".format(
        len(nodes), len(rows), reference))
    bar = progress_bar(len(nodes), "sensitivity", unit="node") if show_bar else None
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
