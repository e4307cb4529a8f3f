"""HTML pages and PNG charts for reports: self-contained (inline CSS, images as data: URIs, no scripts).

matplotlib draws the charts where it is installed (the CPU side, `make install`); where it is not (the
GPU machine's staged Python) the page shows the same numbers as CSS bars and says so.
"""

import base64
import html
import io

_STYLE = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:75em}"
          "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
          "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}td.n{text-align:right}"
          ".gate{padding:0.6em 1em;border-radius:4px;font-weight:bold}"
          ".pass{background:#e3f4e1;color:#1d5e1a}.fail{background:#fbe3e1;color:#8a1c12}"
          "tr.bad td{background:#fbe3e1}.bar{height:11px;display:inline-block;background:#c1554a}"
          ".gain{background:#4a9f5a}")


def _e(s):
    return html.escape(str(s), quote=True)


def matplotlib_pyplot():
    """pyplot with the file-only Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def png_data_uri(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def drop_chart(names, drops, cis, limit_overall, limit_slice):
    """A horizontal bar chart of the macro-F1 drop per slice (points) with 95 % intervals; a data: URI or None."""
    plt = matplotlib_pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(names) + 1.2))
    y = list(range(len(names)))[::-1]
    colors = ["#c1554a" if d > (limit_overall if n == "all" else limit_slice) else "#4a7fc1" for n, d in zip(names, drops)]
    lo = [max(0.0, d - c[0]) if c else 0 for d, c in zip(drops, cis)]
    hi = [max(0.0, c[1] - d) if c else 0 for d, c in zip(drops, cis)]
    ax.barh(y, drops, color=colors, xerr=[lo, hi], ecolor="#555", capsize=2)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.axvline(limit_slice, color="#c1554a", linestyle="--", linewidth=1, label="slice limit {:g} pt".format(limit_slice))
    ax.axvline(limit_overall, color="#e0913a", linestyle=":", linewidth=1, label="overall limit {:g} pt".format(limit_overall))
    ax.axvline(0, color="#222", linewidth=0.8)
    ax.set_xlabel("macro-F1 drop vs FP32 baseline (points; 95% bootstrap interval)")
    ax.legend(fontsize=7, loc="lower right")
    uri = png_data_uri(fig)
    plt.close(fig)
    return uri


def verify_html(report):
    """The verify report as one page: verdict, gates, slices with a chart, flipped examples."""
    d = report.to_dict()
    lim = d["limits"]
    names = list(d["slices"])
    drops = [d["slices"][n]["macro_f1_drop_pt"] for n in names]
    cis = [d["slices"][n]["macro_f1_drop_ci95"] for n in names]
    chart = drop_chart(names, drops, cis, lim["max_f1_drop"], lim["max_slice_f1_drop"])
    failed = {g["slice"] or "all" for g in d["gates"] if not g["passed"]}
    parts = ["<!DOCTYPE html>", '<html lang="zh"><head><meta charset="utf-8">',
             "<title>trtbuild verify {}</title><style>{}</style></head><body>".format(_e(report.target), _STYLE),
             "<h1>Accuracy drift: {}</h1>".format(_e(report.target)),
             '<p class="gate {}">{}</p>'.format("pass" if report else "fail", _e(report.summary())),
             "<p>candidate <code>{}</code> ({}{}) vs baseline <code>{}</code> (ONNX Runtime FP32, CPU) on {} texts "
             "from {}. A drop is baseline minus candidate in points: positive means worse.</p>".format(
                 _e(report.candidate), _e(report.runner), ", " + _e(report.device) if report.device else "",
                 _e(report.baseline), report.texts, _e(", ".join(report.eval_files)))]
    parts.append("<h2>Gates</h2><table><tr><th>gate</th><th>value</th><th>limit</th><th>result</th></tr>")
    for g in d["gates"]:
        fmt = "{:.2%}" if g["unit"] == "rate" else "{:+.2f} pt"
        parts.append('<tr class="{}"><td>{}</td><td class="n">{}</td><td class="n">{}</td><td>{}</td></tr>'.format(
            "" if g["passed"] else "bad", _e(g["name"]), fmt.format(g["value"]), fmt.format(g["limit"]),
            "pass" if g["passed"] else "FAIL"))
    parts.append("</table><h2>Slices</h2>")
    if chart:
        parts.append('<img alt="macro-F1 drop per slice" src="{}">'.format(chart))
    else:
        parts.append("<p>(matplotlib is not installed here: the chart is drawn as bars in the table.)</p>")
    parts.append("<table><tr><th>slice</th><th>texts</th><th>macro-F1 base</th><th>macro-F1 cand</th>"
                 "<th>drop (pt)</th><th>95% CI</th><th>accuracy drop (pt)</th><th>flips</th><th>max |Δlogit|</th>"
                 "<th>mean KL</th>{}</tr>".format("" if chart else "<th></th>"))
    for n in names:
        m = d["slices"][n]
        ci = m["macro_f1_drop_ci95"]
        bar = ""
        if not chart:
            width = min(abs(m["macro_f1_drop_pt"]) * 20, 300)
            bar = '<td><span class="bar{}" style="width:{:.0f}px"></span></td>'.format(
                " gain" if m["macro_f1_drop_pt"] < 0 else "", width)
        parts.append('<tr class="{}"><td>{}</td><td class="n">{}</td><td class="n">{:.2%}</td><td class="n">{:.2%}</td>'
                     '<td class="n">{:+.2f}</td><td class="n">{}</td><td class="n">{:+.2f}</td><td class="n">{} '
                     '({:.1%})</td><td class="n">{:.3g}</td><td class="n">{:.2g}</td>{}</tr>'.format(
                         "bad" if n in failed else "", _e(n), m["texts"], m["baseline"]["macro_f1"],
                         m["candidate"]["macro_f1"], m["macro_f1_drop_pt"],
                         "" if not ci else "{:+.2f} … {:+.2f}".format(ci[0], ci[1]), m["accuracy_drop_pt"],
                         m["flips"], m["flip_rate"], m["logit_max_abs_diff"], m["mean_kl"], bar))
    parts.append("</table><h2>Largest drops, with texts that flipped</h2>")
    for w in d["worst_slices"]:
        parts.append("<h3>{} ({:+.2f} pt, {} of {} texts flipped)</h3>".format(
            _e(w["slice"]), w["macro_f1_drop_pt"], w["flips"], w["texts"]))
        if not w["examples"]:
            parts.append("<p>no flipped texts</p>")
            continue
        parts.append("<table><tr><th>text</th><th>label</th><th>baseline</th><th>candidate</th></tr>")
        for ex in w["examples"]:
            parts.append("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
                _e(ex["text"]), _e(ex["label"]), _e(ex["baseline"]), _e(ex["candidate"])))
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
