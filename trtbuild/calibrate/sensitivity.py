"""Sensitivity that points at the cause, and a fallback at that grain, both judged on held-out calibration texts.

- Per class (Q/K/V, attention-output, FFN-in, FFN-out, attention core): agreement with FP32 when only that
  class is quantized. Per layer and tensor: the outlier channels (max over the median of the per-channel
  max |x|) of every GEMM input.
- The fallback: when the held-out flip rate is above the target, the quantized tensors of the most sensitive
  classes are scored one by one back in float (all else quantized), then put back in float in that order until
  the target is met or `calibrate.fallback_max_layers` is spent. The eval set is never used.
- The speed cost of a float choice is estimated from FLOPs: each GEMM's 2*in*out per token, as a share of the
  encoder's GEMM FLOPs that leave INT8.
"""

import time

import numpy as np

from trtbuild._util import noop
from trtbuild.calibrate.equalize import CLASS_TITLES
from trtbuild.calibrate.qdq import QdqPlan, build_qdq_model

MAX_TENSOR_RUNS = 16  # per-tensor scoring runs of the fallback (the most sensitive classes first)


def gemm_flops(model, plan=None):
    """{node: 2*in*out multiply-adds per token} of the GEMMs with a weight initializer: those `plan` quantizes, or
    with no plan every one in the graph (the total the FLOP shares are taken of)."""
    inits = {i.name: i for i in model.graph.initializer}
    wanted = None if plan is None else set(plan.quantized_nodes)
    out = {}
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or (wanted is not None and node.name not in wanted):
            continue
        w = next((i for i in node.input if i in inits and len(inits[i].dims) == 2), None)
        if w is not None:
            out[node.name] = 2 * int(inits[w].dims[0]) * int(inits[w].dims[1])
    return out


def _variant(qmodel, plan, float_tensors, act_amax, w_amax):
    """The Q/DQ model with `float_tensors`' consumer nodes left in float."""
    nodes = set()
    for t in float_tensors:
        nodes.update(n for n, _ in plan.activations[t])
    sub = _without_nodes(plan, nodes)
    return build_qdq_model(qmodel, sub, act_amax, w_amax), sorted(nodes)


def _without_nodes(plan, nodes):
    """A copy of `plan` without the quantized nodes in `nodes` (their activations and weights)."""
    sub = QdqPlan()
    for t, uses in plan.activations.items():
        keep = [u for u in uses if u[0] not in nodes]
        if keep:
            sub.activations[t] = keep
    for w, (axis, uses) in plan.weights.items():
        keep = [u for u in uses if u[0] not in nodes]
        if keep:
            sub.weights[w] = (axis, keep)
    sub.quantized_nodes = [n for n in plan.quantized_nodes if n not in nodes]
    sub.excluded_nodes = list(plan.excluded_nodes) + sorted(nodes)
    return sub


def class_report(qmodel, plan, act_amax, w_amax, judge, classes, progress=noop):
    """{class: agreement when only that class's tensors are quantized} (classes with a quantized tensor)."""
    out = {}
    present = sorted(set(info["class"] for t, info in classes.items() if t in plan.activations))
    for klass in present:
        others = [t for t in plan.activations if classes.get(t, {}).get("class") != klass]
        model, _ = _variant(qmodel, plan, others, act_amax, w_amax)
        out[klass] = dict(judge.score(model), tensors=sum(1 for t in plan.activations
                                                           if classes.get(t, {}).get("class") == klass),
                          title=CLASS_TITLES.get(klass, klass))
        progress("  only {:<9} quantized: {:.2%} flips, mean KL {:.3g}".format(klass, out[klass]["flip_rate"],
                                                                              out[klass]["mean_kl"]))
    return out


def fallback_search(qmodel, plan, act_amax, w_amax, judge, target, budget, classes, first=None, progress=noop):
    """Put the most sensitive quantized tensors back in float until the held-out flip rate is <= target (see the
    module docstring). `first`: the judge's score of the whole plan when the caller has it (else scored here).
    Returns the record: per-class report, ranking, steps, the float tensors and nodes, and `final` (the held-out
    agreement of the last step)."""
    start = time.perf_counter()
    runs0 = judge.runs
    if first is None:
        first = judge.score(_variant(qmodel, plan, (), act_amax, w_amax)[0])
    progress("fallback search on {} held-out calibration texts: {:.2%} flips, target {:.2%}".format(
        first["texts"], first["flip_rate"], target))
    per_class = class_report(qmodel, plan, act_amax, w_amax, judge, classes, progress)
    order = sorted(per_class, key=lambda k: -per_class[k]["mean_kl"])
    candidates = [t for k in order for t in sorted(plan.activations, key=lambda t: (classes.get(t, {}).get("layer")
                                                                                  or 0, t))
                  if classes.get(t, {}).get("class") == k][:MAX_TENSOR_RUNS]
    gains = []
    for t in candidates:
        model, _ = _variant(qmodel, plan, [t], act_amax, w_amax)
        score = judge.score(model)
        gains.append((first["mean_kl"] - score["mean_kl"], t, score))
    ranked = sorted((g for g in gains if g[0] > 0), key=lambda g: -g[0])  # only what helps on its own
    flops = gemm_flops(qmodel)
    total = float(sum(flops.values())) or 1.0
    chosen, steps, final = [], [], first
    for gain, t, _ in ranked:
        if final["flip_rate"] <= target or len(chosen) >= budget:
            break
        model, nodes = _variant(qmodel, plan, chosen + [t], act_amax, w_amax)
        score = judge.score(model)
        kept = (score["flips"], score["mean_kl"]) < (final["flips"], final["mean_kl"])
        share = sum(flops.get(n, 0) for n in nodes) / total
        steps.append({"float_tensor": t, "class": classes.get(t, {}).get("class"), "layer": classes.get(t, {})
                      .get("layer"), "kl_gain": gain, "kept": kept, "flip_rate": score["flip_rate"],
                      "mean_kl": score["mean_kl"], "gemm_flops_float_share": share})
        progress("  float {:<60} held-out flips {:.2%}, GEMM FLOPs in float {:.1%}{}".format(
            t, score["flip_rate"], share, "" if kept else " (no better: back to INT8)"))
        if kept:  # a step that does not lower flips (or, at equal flips, KL) is undone
            chosen.append(t)
            final = score
    _, nodes = _variant(qmodel, plan, chosen, act_amax, w_amax)
    return {"target": target, "budget": budget, "start": first, "final": final, "passed": final["flip_rate"] <= target,
            "per_class": per_class, "ranking": [{"tensor": t, "class": classes.get(t, {}).get("class"),
                                                 "layer": classes.get(t, {}).get("layer"), "kl_gain": g,
                                                 "flip_rate": sc["flip_rate"]} for g, t, sc in ranked],
            "steps": steps, "float_tensors": chosen, "float_nodes": nodes,
            "gemm_flops_float_share": sum(flops.get(n, 0) for n in nodes) / total,
            "runs": judge.runs - runs0, "seconds": round(time.perf_counter() - start, 1),
            "speed": "estimated from FLOPs here; the engine's speed: trtbuild build --int8 && trtbuild bench"}

