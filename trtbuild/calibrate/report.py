"""sensitivity.json + sensitivity.html: what calibrate decided and why, measured on held-out calibration texts.

Per class (only that class quantized), per layer (the equalized GEMM inputs with their alpha and outlier
channels before and after equalization), the fallback's steps, and the share of GEMM FLOPs left in INT8.
"""

from trtbuild.calibrate.equalize import CLASS_TITLES, outliers
from trtbuild.html import escape, page

SENSITIVITY_FORMAT = "trtbuild-sensitivity/1"


def sensitivity_document(held_out, per_class, equalizations, chmax, fallback, flops_int8_share, gemms, settings):
    """The JSON document (see the module docstring). `chmax`: per-channel max |x| of the raw GEMM inputs."""
    tensors = []
    for e in equalizations:
        before = outliers(chmax[e.tensor]) if e.tensor in chmax else None
        after = outliers(chmax[e.tensor] / e.factors) if e.tensor in chmax else None
        tensors.append({"tensor": e.tensor, "class": e.klass, "layer": e.layer, "alpha": e.alpha, "mode": e.mode,
                        "outliers_before": before, "outliers_after": after,
                        "factor_min": float(e.factors.min()), "factor_max": float(e.factors.max())})
    raw = [{"tensor": t, "outliers": outliers(m)} for t, m in sorted(chmax.items())
           if t not in {e.tensor for e in equalizations}]
    return {"format": SENSITIVITY_FORMAT, "judged_on": "held-out calibration texts (never the eval set)",
            "held_out": held_out, "per_class": per_class, "equalized": tensors, "not_equalized": raw,
            "fallback": fallback, "gemms": gemms, "gemm_flops_int8_share": flops_int8_share, "settings": settings}


def _pct(v):
    return "" if v is None else "{:.2%}".format(v)


def sensitivity_html(doc):
    held = doc.get("held_out") or {}
    parts = ["<h1>Calibration sensitivity</h1>",
             "<p>Judged on {} held-out calibration texts against FP32 (argmax flips, mean KL): the eval set is "
             "verify's, never used here. Final Q/DQ model: <b>{}</b> flips, mean KL {:.3g}. GEMM FLOPs in INT8: "
             "<b>{:.1%}</b> of {} GEMMs.</p>".format(held.get("texts", 0), _pct(held.get("flip_rate")),
                                                      held.get("mean_kl") or 0.0, doc["gemm_flops_int8_share"],
                                                      doc["gemms"])]
    if doc.get("per_class"):
        parts.append("<h2>Per class: only this class quantized</h2><table><tr><th>class</th><th>tensors</th>"
                     "<th>flips</th><th>mean KL</th></tr>")
        for k, v in sorted(doc["per_class"].items(), key=lambda kv: -kv[1]["mean_kl"]):
            parts.append('<tr><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{:.3g}</td></tr>'
                         .format(escape(CLASS_TITLES.get(k, k)), v.get("tensors", ""), _pct(v["flip_rate"]),
                                 v["mean_kl"]))
        parts.append("</table>")
    fb = doc.get("fallback")
    if fb:
        parts.append("<h2>Fallback</h2><p>target {} held-out flips; {} -> {} with {} tensor(s) in float ({:.1%} of "
                     "the GEMM FLOPs).</p>".format(_pct(fb["target"]), _pct(fb["start"]["flip_rate"]),
                                                   _pct(fb["final"]["flip_rate"]), len(fb["float_tensors"]),
                                                   fb["gemm_flops_float_share"]))
        parts.append("<table><tr><th>step</th><th>tensor</th><th>class</th><th>layer</th><th>flips</th>"
                     "<th>GEMM FLOPs in float</th></tr>")
        for i, s in enumerate(fb["steps"], 1):
            parts.append('<tr><td class="n">{}</td><td>{}</td><td>{}</td><td class="n">{}</td><td class="n">{}</td>'
                         '<td class="n">{:.1%}</td></tr>'.format(i, escape(s["float_tensor"]), escape(s["class"]),
                                                                 s["layer"], _pct(s["flip_rate"]),
                                                                 s["gemm_flops_float_share"]))
        parts.append("</table>")
    if doc.get("equalized"):
        parts.append("<h2>Equalized GEMM inputs</h2><p>Outlier ratio: the largest channel's max |x| over the median "
                     "channel's, before and after equalization (a per-tensor int8 scale serves the median channel "
                     "that much worse).</p><table><tr><th>layer</th><th>class</th><th>alpha</th><th>1/s</th>"
                     "<th>ratio before</th><th>top channels before</th><th>ratio after</th></tr>")
        for t in sorted(doc["equalized"], key=lambda t: (t["layer"] if t["layer"] is not None else -1, t["class"])):
            b, a = t["outliers_before"] or {}, t["outliers_after"] or {}
            top = ", ".join("{} ({:.3g})".format(c["channel"], c["max"]) for c in b.get("channels", [])[:3])
            parts.append('<tr><td class="n">{}</td><td>{}</td><td class="n">{:g}</td><td>{}</td><td class="n">{:.1f}'
                         '</td><td>{}</td><td class="n">{:.1f}</td></tr>'.format(
                             t["layer"], escape(t["class"]), t["alpha"], escape(t["mode"]), b.get("ratio", 0.0),
                             escape(top), a.get("ratio", 0.0)))
        parts.append("</table>")
    return page("trtbuild calibrate: sensitivity", parts)
