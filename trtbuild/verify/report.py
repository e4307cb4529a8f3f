"""The verify report: gates, per-slice drift, the worst slices with flipped texts; as JSON, JUnit XML (one
testcase per gate and slice, so CI lists them) and one HTML page with a chart of the drop per slice.

A drop is baseline minus candidate, in percentage points: positive means the candidate is worse.
`slang_unseen_terms` lists the lexicon terms of the `text:slang-unseen` slice (eval texts with slang the
calibration corpus never uses), most eval texts first.
"""

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional
from xml.sax.saxutils import escape as _escape
from xml.sax.saxutils import quoteattr as _quoteattr

import numpy as np

from trtbuild._util import Result
from trtbuild.errors import EXIT_GATE, EXIT_OK
from trtbuild.html import escape, matplotlib_pyplot, page, png_data_uri
from trtbuild.verify.metrics import drift_metrics
from trtbuild.workdir import atomic_write_json, atomic_write_text

REPORT_FORMAT = "trtbuild-verify/1"


def _xml_text(text):
    """Drop the characters XML 1.0 cannot hold (control characters other than tab and newlines)."""
    return "".join(c for c in str(text) if c in "\t\n\r" or ord(c) >= 0x20)


@dataclass
class Gate:
    name: str
    value: float
    limit: float
    passed: bool
    slice: Optional[str] = None
    unit: str = "pt"

    def describe(self):
        fmt = "{:.2%}" if self.unit == "rate" else "{:.2f} pt"
        return "{} {} (limit {})".format(self.name, fmt.format(self.value), fmt.format(self.limit))


@dataclass
class VerifyReport(Result):
    """The drift of one candidate against the FP32 baseline. Truthy when every gate passes."""

    target: str
    candidate: str
    runner: str
    baseline: str
    eval_files: List[str]
    texts: int
    label_names: List[str]
    limits: Dict[str, float]
    slices: Dict[str, dict]
    gates: List[Gate]
    worst: List[dict]
    seconds: float
    device: Optional[str] = None
    paths: Dict[str, str] = field(default_factory=dict)
    lexicon: Optional[str] = None  # the lexicon of the slang slices: "packaged" or its path
    slang_unseen_terms: List[dict] = field(default_factory=list)  # [{term, kind, texts}], top 20

    def __bool__(self):
        return all(g.passed for g in self.gates)

    @property
    def exit_code(self):
        return EXIT_OK if self else EXIT_GATE

    @property
    def overall(self):
        return self.slices["all"]

    def failed_gates(self):
        return [g for g in self.gates if not g.passed]

    def summary(self):
        o = self.overall
        head = "{}: {} | macro-F1 {:.2%} -> {:.2%} (drop {:+.2f} pt, 95% CI {}), accuracy drop {:+.2f} pt, " \
               "flips {:.2%}, mean KL {:.2g}".format(
                   self.target, "PASS" if self else "FAIL", o["baseline"]["macro_f1"], o["candidate"]["macro_f1"],
                   o["macro_f1_drop_pt"], _ci(o["macro_f1_drop_ci95"]), o["accuracy_drop_pt"], o["flip_rate"],
                   o["mean_kl"])
        return head

    def to_dict(self):
        return {
            "format": REPORT_FORMAT, "target": self.target, "candidate": self.candidate, "runner": self.runner,
            "baseline": self.baseline, "device": self.device, "eval_files": self.eval_files, "texts": self.texts,
            "labels": self.label_names, "passed": bool(self), "exit_code": self.exit_code, "limits": self.limits,
            "gates": [g.__dict__ for g in self.gates], "slices": self.slices, "worst_slices": self.worst,
            "lexicon": self.lexicon, "slang_unseen_terms": self.slang_unseen_terms, "seconds": self.seconds,
            "paths": self.paths,
        }

    def to_junit(self):

        def escape(text):
            return _escape(_xml_text(text))

        def quoteattr(text):
            return _quoteattr(_xml_text(text))

        cases = []
        gated = {g.slice: g for g in self.gates if g.slice is not None}
        for g in self.gates:
            if g.slice is not None:
                continue
            body = "" if g.passed else '<failure message={}/>'.format(quoteattr(g.describe()))
            cases.append('  <testcase classname={} name={}>{}</testcase>'.format(
                quoteattr("trtbuild.verify." + self.target), quoteattr("gate: " + g.name), body))
        for name, m in self.slices.items():
            if name == "all":
                continue
            g = gated.get(name)
            if g is None:
                body = '<skipped message={}/>'.format(quoteattr("{} texts: fewer than {} are reported, not gated".format(
                    m["texts"], int(self.limits["min_slice_texts"]))))
            elif not g.passed:
                body = '<failure message={}/>'.format(quoteattr(g.describe()))
            else:
                body = ""
            cases.append('  <testcase classname={} name={}>{}</testcase>'.format(
                quoteattr("trtbuild.verify." + self.target), quoteattr("slice: " + name), body))
        failures = sum(1 for c in cases if "<failure" in c)
        skipped = sum(1 for c in cases if "<skipped" in c)
        return ('<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name={} tests="{}" failures="{}" skipped="{}" '
                'time="{:.2f}">\n{}\n  <system-out>{}</system-out>\n</testsuite>\n').format(
                    quoteattr("trtbuild.verify." + self.target), len(cases), failures, skipped, self.seconds,
                    "\n".join(cases), escape(self.summary()))

    def write(self, directory):
        """reports/verify-<target>.{json,xml,html}, each written atomically; returns the paths."""
        os.makedirs(directory, exist_ok=True)
        base = os.path.join(directory, "verify-{}".format(self.target))
        self.paths = {"json": base + ".json", "junit": base + ".xml", "html": base + ".html"}
        atomic_write_text(self.paths["junit"], self.to_junit())
        atomic_write_text(self.paths["html"], verify_html(self))
        atomic_write_json(self.paths["json"], self.to_dict())
        return self.paths


def _ci(ci):
    return "n/a" if not ci else "[{:+.2f}, {:+.2f}]".format(ci[0], ci[1])


def evaluate(evalset, cand_logits, vcfg, target, candidate, runner_name, baseline, seconds=0.0, device=None):
    """The VerifyReport for candidate logits on an eval set under the gate settings `vcfg`."""
    y = evalset.labels
    slices = {}
    masks = evalset.slices()
    for name, mask in masks.items():
        if not mask.any():
            continue
        slices[name] = drift_metrics(y[mask], evalset.baseline[mask], cand_logits[mask],
                                     bootstrap=vcfg.bootstrap, seed=vcfg.seed)
    o = slices["all"]
    gates = [Gate("overall macro-F1 drop", o["macro_f1_drop_pt"], vcfg.max_f1_drop, o["macro_f1_drop_pt"] <= vcfg.max_f1_drop),
             Gate("overall flip rate", o["flip_rate"], vcfg.max_flip_rate, o["flip_rate"] <= vcfg.max_flip_rate,
                  unit="rate")]
    for name, m in slices.items():
        if name != "all" and m["texts"] >= vcfg.min_slice_texts:
            gates.append(Gate("slice {} macro-F1 drop".format(name), m["macro_f1_drop_pt"], vcfg.max_slice_f1_drop,
                              m["macro_f1_drop_pt"] <= vcfg.max_slice_f1_drop, slice=name))
    pb, pc = evalset.baseline.argmax(-1), cand_logits.argmax(-1)
    worst = []
    ranked = sorted((n for n in slices if n != "all"), key=lambda n: -slices[n]["macro_f1_drop_pt"])
    for name in ranked[:vcfg.worst_slices]:
        rows = np.nonzero(masks[name] & (pb != pc))[0][:vcfg.examples]
        worst.append({"slice": name, "macro_f1_drop_pt": slices[name]["macro_f1_drop_pt"],
                      "flips": slices[name]["flips"], "texts": slices[name]["texts"],
                      "examples": [{"text": evalset.texts[r], "label": evalset.label_names[int(y[r])],
                                    "baseline": evalset.label_names[int(pb[r])],
                                    "candidate": evalset.label_names[int(pc[r])]} for r in rows]})
    limits = {"max_f1_drop": vcfg.max_f1_drop, "max_flip_rate": vcfg.max_flip_rate,
              "max_slice_f1_drop": vcfg.max_slice_f1_drop, "min_slice_texts": vcfg.min_slice_texts,
              "bootstrap": vcfg.bootstrap}
    return VerifyReport(target=target, candidate=candidate, runner=runner_name, baseline=baseline,
                        eval_files=sorted(set(evalset.sources)), texts=len(evalset), label_names=evalset.label_names,
                        limits=limits, slices=slices, gates=gates, worst=worst, seconds=round(seconds, 2),
                        device=device, lexicon=evalset.lexicon, slang_unseen_terms=evalset.slang_unseen_terms())


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


def _unseen_html(d):
    """The section on slang the calibration corpus never saw: the slice's numbers and its terms."""
    m = d["slices"].get("text:slang-unseen")
    lexicon = "the lexicon shipped with trtbuild" if d.get("lexicon") == "packaged" else (
        "<code>{}</code>".format(escape(d["lexicon"])) if d.get("lexicon") else "the lexicon")
    parts = ["<h2>Slang the calibration never saw</h2>"]
    if m is None:
        parts.append("<p>No <code>text:slang-unseen</code> slice: no eval text uses a term of {} that the calibration "
                     "corpus lacks (or no calibration corpus is configured).</p>".format(lexicon))
        return "".join(parts)
    parts.append("<p>Slice <code>text:slang-unseen</code>: {} eval texts use a term of {} that no calibration text "
                 "uses (INT8 ranges were set without them): macro-F1 drop {:+.2f} pt, {} flipped ({:.1%}).</p>".format(
                     m["texts"], lexicon, m["macro_f1_drop_pt"], m["flips"], m["flip_rate"]))
    terms = d.get("slang_unseen_terms") or []
    if terms:
        parts.append("<table><tr><th>term</th><th>kind</th><th>eval texts</th></tr>")
        for t in terms:
            parts.append('<tr><td>{}</td><td>{}</td><td class="n">{}</td></tr>'.format(
                escape(t["term"]), escape(t["kind"]), t["texts"]))
        parts.append("</table>")
    return "".join(parts)


def verify_html(report):
    """The verify report as one page: verdict, gates, slices with a chart, flipped examples."""
    d = report.to_dict()
    lim = d["limits"]
    names = list(d["slices"])
    drops = [d["slices"][n]["macro_f1_drop_pt"] for n in names]
    cis = [d["slices"][n]["macro_f1_drop_ci95"] for n in names]
    chart = drop_chart(names, drops, cis, lim["max_f1_drop"], lim["max_slice_f1_drop"])
    failed = {g["slice"] or "all" for g in d["gates"] if not g["passed"]}
    parts = ["<h1>Accuracy drift: {}</h1>".format(escape(report.target)),
             '<p class="gate {}">{}</p>'.format("pass" if report else "fail", escape(report.summary())),
             "<p>candidate <code>{}</code> ({}{}) vs baseline <code>{}</code> (ONNX Runtime FP32, CPU) on {} texts "
             "from {}. A drop is baseline minus candidate in points: positive means worse.</p>".format(
                 escape(report.candidate), escape(report.runner), ", " + escape(report.device) if report.device else "",
                 escape(report.baseline), report.texts, escape(", ".join(report.eval_files)))]
    parts.append("<h2>Gates</h2><table><tr><th>gate</th><th>value</th><th>limit</th><th>result</th></tr>")
    for g in d["gates"]:
        fmt = "{:.2%}" if g["unit"] == "rate" else "{:+.2f} pt"
        parts.append('<tr class="{}"><td>{}</td><td class="n">{}</td><td class="n">{}</td><td>{}</td></tr>'.format(
            "" if g["passed"] else "bad", escape(g["name"]), fmt.format(g["value"]), fmt.format(g["limit"]),
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
                         "bad" if n in failed else "", escape(n), m["texts"], m["baseline"]["macro_f1"],
                         m["candidate"]["macro_f1"], m["macro_f1_drop_pt"],
                         "" if not ci else "{:+.2f} … {:+.2f}".format(ci[0], ci[1]), m["accuracy_drop_pt"],
                         m["flips"], m["flip_rate"], m["logit_max_abs_diff"], m["mean_kl"], bar))
    parts.append("</table>")
    parts.append(_unseen_html(d))
    parts.append("<h2>Largest drops, with texts that flipped</h2>")
    for w in d["worst_slices"]:
        parts.append("<h3>{} ({:+.2f} pt, {} of {} texts flipped)</h3>".format(
            escape(w["slice"]), w["macro_f1_drop_pt"], w["flips"], w["texts"]))
        if not w["examples"]:
            parts.append("<p>no flipped texts</p>")
            continue
        parts.append("<table><tr><th>text</th><th>label</th><th>baseline</th><th>candidate</th></tr>")
        for ex in w["examples"]:
            parts.append("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
                escape(ex["text"]), escape(ex["label"]), escape(ex["baseline"]), escape(ex["candidate"])))
        parts.append("</table>")
    return page("trtbuild verify {}".format(report.target), parts)
