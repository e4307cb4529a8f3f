"""`trtbuild verify`: accuracy drift of a candidate (Q/DQ ONNX, engine, any ONNX) against the ONNX
Runtime FP32 baseline, overall and per slice, as a CI gate.

1. Eval set (`prepare_eval`): the labelled eval files the config names (jsonl / csv / parquet, a text
   and a label column; labels are the model's label names or integer ids) are tokenized into the
   length buckets, tagged with their slices, and run once through the exported FP32 ONNX in ONNX
   Runtime (CPU). Inputs, labels, slices and baseline logits go to WORKDIR/cache/verify-<key>.npz,
   keyed by the hashes of the ONNX, the eval files, the lexicon and the settings; the key needs no
   tokenizer, so the GPU side (Python 3.9, numpy + TensorRT) finds the cache and runs no tokenizer,
   torch or baseline.
2. Candidate (`run_candidate`): the same padded batches through the candidate's runner
   (`trtbuild.runners.runner_for`: OrtRunner for .onnx, TrtRunner for a trtbuild engine).
3. Metrics (`drift_metrics`), overall and for every slice (each eval file, slang vs plain text by the
   lexicon, length bucket, true label): accuracy and macro-F1 of both, their drop in points with a
   paired bootstrap 95 % interval, argmax flip rate, max / mean |logit diff|, mean KL(baseline ||
   candidate) of the softmax. The slices with the largest drop are listed with texts that flipped.
4. Gate (`VerifyConfig`; defaults: macro-F1 drop <= 0.8 pt overall, flip rate <= 1 %, per-slice
   macro-F1 drop <= 2 pt for slices of at least 30 texts): a `VerifyReport` that is truthy when every
   gate passes and writes JSON, JUnit XML (one testcase per gate and slice) and an HTML page with a
   bar chart of the drop per slice.

A drop is baseline minus candidate, in percentage points: positive means the candidate is worse.
"""

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from trtbuild.artifacts import WorkDir, atomic_path, atomic_write_json, atomic_write_text, sha256_file
from trtbuild.errors import EXIT_GATE, EXIT_OK, TrtbuildError
from trtbuild.export import check_export

CACHE_FORMAT = "trtbuild-verify-cache/2"
REPORT_FORMAT = "trtbuild-verify/1"
CANDIDATE_NAMES = ("qdq", "fp16", "int8", "fp32")


def _noop(msg):
    pass


# ---------------------------------------------------------------------------------------------
# The eval set, its slices and the cached baseline

@dataclass
class EvalSet:
    """Tokenized, labelled eval texts with their slices and the FP32 baseline logits (numpy arrays)."""

    texts: List[str]
    labels: "object"  # int64 [N]
    label_names: List[str]
    sources: List[str]  # the eval file each text came from
    slang: "object"  # bool [N] or None when no lexicon is configured
    lengths: "object"  # int64 [N] tokens incl. specials, before truncation
    buckets: "object"  # int64 [N] the bucket each text was padded to
    batches: list  # [(feeds {input: int64 [b, bucket]}, rows int64 [b])]
    input_names: List[str]
    baseline: "object"  # float32 [N, labels]
    key: str
    path: str  # the cache file

    def __len__(self):
        return len(self.texts)

    def subset(self, rows):
        """The same eval set restricted to `rows` (indices), renumbered 0..len(rows)-1, batches kept."""
        import numpy as np

        rows = np.asarray(sorted(set(int(r) for r in rows)), dtype=np.int64)
        new_index = -np.ones(len(self), dtype=np.int64)
        new_index[rows] = np.arange(len(rows))
        batches = []
        for feeds, old in self.batches:
            keep = new_index[old] >= 0
            if keep.any():
                batches.append(({n: a[keep] for n, a in feeds.items()}, new_index[old][keep]))
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return EvalSet(texts=[self.texts[r] for r in rows], labels=self.labels[rows], label_names=self.label_names,
                       sources=[self.sources[r] for r in rows], slang=pick(self.slang), lengths=self.lengths[rows],
                       buckets=self.buckets[rows], batches=batches, input_names=self.input_names,
                       baseline=self.baseline[rows], key=self.key + "-subset", path=self.path)

    def slices(self):
        """name -> bool mask; 'all' first, then eval sets, text kind, length bucket and label."""
        import numpy as np

        out = {"all": np.ones(len(self), dtype=bool)}
        src = np.asarray(self.sources)
        sources = sorted(set(self.sources))
        for s in sources:
            out["set:" + _short_source(s, sources)] = src == s
        if self.slang is not None:
            out["text:slang"] = self.slang.copy()
            out["text:plain"] = ~self.slang
        for b in sorted(set(int(x) for x in self.buckets)):
            out["length:<={}".format(b)] = self.buckets == b
        for i, name in enumerate(self.label_names):
            out["label:" + name] = self.labels == i
        return out


def _short_source(path, others=()):
    """`calibration_data/slang/eval.jsonl` -> `slang/eval.jsonl`: the last two path parts, or as many more
    as it takes to tell it apart from the other eval files."""
    parts = os.path.normpath(path).split(os.sep)
    others = [os.path.normpath(o).split(os.sep) for o in others if o != path]
    keep = 2
    while keep < len(parts) and any(o[-keep:] == parts[-keep:] for o in others):
        keep += 1
    return "/".join(parts[-keep:])


def _xml_text(text):
    """Drop the characters XML 1.0 cannot hold (control characters other than tab and newlines)."""
    return "".join(c for c in str(text) if c in "\t\n\r" or ord(c) >= 0x20)


def _label_ids(corpus, label_names, paths, label_column):
    """Map each text's label (a label name, or an integer id) to the model's id; one-line errors."""
    import numpy as np

    index = {name: i for i, name in enumerate(label_names)}
    lowered = {name.lower(): i for i, name in enumerate(label_names)}
    missing = {}
    for src, label in zip(corpus.sources, corpus.labels):
        if label is None:
            missing[src] = missing.get(src, 0) + 1
    for src in paths:
        if missing.get(src):
            count = sum(1 for s in corpus.sources if s == src)
            what = "has no label column {!r}".format(label_column) if missing[src] == count else \
                "has {} text(s) without a label".format(missing[src])
            raise TrtbuildError("eval file {} {}; verify needs a label per text (one of {}, or their ids 0..{})".format(
                src, what, ", ".join(label_names), len(label_names) - 1))
    ids, unknown = [], {}
    for src, label in zip(corpus.sources, corpus.labels):
        label = str(label).strip()
        if label in index:
            ids.append(index[label])
        elif label.lower() in lowered:
            ids.append(lowered[label.lower()])
        elif label.lstrip("-").isdigit() and 0 <= int(label) < len(label_names):
            ids.append(int(label))
        else:
            unknown.setdefault(src, set()).add(label)
            ids.append(-1)
    if unknown:
        src, labels = sorted(unknown.items())[0]
        raise TrtbuildError("eval file {}: label(s) {} are not labels of this model ({}, or ids 0..{}); fix the file "
                            "or export the model with these labels".format(
                                src, ", ".join(repr(x) for x in sorted(labels)[:5]), ", ".join(label_names),
                                len(label_names) - 1))
    return np.asarray(ids, dtype=np.int64)


def eval_key(record, eval_paths, buckets, text_column, label_column, lexicon):
    """The cache key: hashes of everything the eval tensors and baseline depend on (no tokenizer needed)."""
    parts = {
        "format": CACHE_FORMAT, "onnx": record["sha256"]["onnx"], "labels": record["labels"],
        "inputs": record["inputs"], "buckets": list(buckets), "columns": [text_column, label_column],
        "eval": [[os.path.normpath(p), sha256_file(p)] for p in eval_paths],
        "lexicon": sha256_file(lexicon) if lexicon else None,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def _check_files(eval_paths, lexicon):
    if not eval_paths:
        raise TrtbuildError("no eval set: set data.eval in the config or pass --eval FILE (jsonl, csv or parquet "
                            "with a text and a label column)")
    for p in eval_paths:
        if not os.path.isfile(p):
            raise TrtbuildError("eval file {} not found".format(p))
        if os.path.splitext(p)[1].lower() == ".txt":
            raise TrtbuildError("eval file {} is plain text and has no labels; use jsonl, csv or parquet with a "
                                "text and a label column".format(p))
    if lexicon and not os.path.isfile(lexicon):
        raise TrtbuildError("lexicon {} not found; fix data.lexicon in the config".format(lexicon))


def prepare_eval(config, eval_paths=None, progress=_noop, show_bar=False):
    """The eval set of `config` with its FP32 baseline: from the cache, or tokenized and run once (CPU)."""
    wd = WorkDir(config.workdir)
    record = check_export(wd.root)
    eval_paths = [os.fspath(p) for p in (eval_paths or config.data.eval)]
    lexicon = config.data.lexicon
    _check_files(eval_paths, lexicon)
    buckets = sorted(b for b in config.data.buckets if b <= record["max_length"]) or [record["max_length"]]
    key = eval_key(record, eval_paths, buckets, config.data.text_column, config.data.label_column, lexicon)
    path = wd.path("cache", "verify-{}.npz".format(key))
    if os.path.isfile(path):
        progress("eval set and FP32 baseline from the cache ({})".format(path))
        return load_eval(path)
    return _make_eval(config, wd, record, eval_paths, lexicon, buckets, key, path, progress, show_bar)


def _make_eval(config, wd, record, eval_paths, lexicon, buckets, key, path, progress, show_bar):
    import numpy as np

    from trtbuild.data import load_corpus, tokenize_into_buckets
    from trtbuild.runners import OrtRunner

    corpus = load_corpus(eval_paths, config.data.text_column, config.data.label_column)
    labels = _label_ids(corpus, record["labels"], eval_paths, config.data.label_column)
    slang = None
    if lexicon:
        from trtbuild.coverage import TermMatcher
        from trtbuild.data import load_lexicon

        matcher = TermMatcher([e.term for e in load_lexicon(lexicon)])
        slang = np.asarray([bool(matcher.find(t)) for t in corpus.texts])
    try:
        from trtbuild.calibrate import _load_tokenizer

        tokenizer = _load_tokenizer(wd.root)
    except ImportError:
        raise TrtbuildError("no cached eval set for these eval files in {}; run `trtbuild verify` once where "
                            "transformers is installed (the CPU side) to tokenize and cache it".format(
                                wd.path("cache"))) from None
    tok = tokenize_into_buckets(tokenizer, corpus.texts, buckets)
    bucket_of = np.zeros(len(corpus), dtype=np.int64)
    for b, rows in tok.buckets.items():
        bucket_of[rows] = b
    batch_size = config.verify.batch_size
    batches = [(b.inputs, np.asarray(b.rows, dtype=np.int64))
               for b in tok.batches(record["inputs"], batch_size, pad_id=tokenizer.pad_token_id or 0)]
    progress("FP32 baseline: {} eval texts in ONNX Runtime (CPU); per bucket {}".format(
        len(corpus), ", ".join("{}: {}".format(b, len(r)) for b, r in sorted(tok.buckets.items()))))
    with OrtRunner(wd.onnx) as base:
        baseline = _run(base, batches, len(corpus), len(record["labels"]), batch_size, show_bar, "FP32 baseline")
    arrays = {"texts": np.asarray(corpus.texts), "labels": labels, "label_names": np.asarray(record["labels"]),
              "sources": np.asarray(corpus.sources), "lengths": np.asarray(tok.lengths, dtype=np.int64),
              "buckets": bucket_of, "inputs": np.asarray(record["inputs"]), "baseline": baseline,
              "meta": np.asarray(json.dumps({"format": CACHE_FORMAT, "key": key, "eval": eval_paths,
                                             "lexicon": lexicon, "onnx_sha256": record["sha256"]["onnx"]}))}
    if slang is not None:
        arrays["slang"] = slang
    for k, (feeds, rows) in enumerate(batches):
        for name, arr in feeds.items():
            arrays["b{}_{}".format(k, name)] = arr.astype(np.int32)
        arrays["b{}_rows".format(k)] = rows
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return load_eval(path)


def load_eval(path):
    """An EvalSet from its cache file (numpy only)."""
    import numpy as np

    try:
        data = np.load(path, allow_pickle=False)
        meta = json.loads(str(data["meta"]))
    except Exception as e:  # a truncated or foreign file
        raise TrtbuildError("eval cache {} is unreadable ({}); delete it and run verify again".format(
            path, str(e).splitlines()[0] if str(e) else type(e).__name__)) from None
    if meta.get("format") != CACHE_FORMAT:
        raise TrtbuildError("eval cache {} has format {!r}, expected {}; delete it and run verify again".format(
            path, meta.get("format"), CACHE_FORMAT))
    inputs = [str(x) for x in data["inputs"]]
    batches, k = [], 0
    while "b{}_rows".format(k) in data:
        batches.append(({n: data["b{}_{}".format(k, n)].astype(np.int64) for n in inputs}, data["b{}_rows".format(k)]))
        k += 1
    return EvalSet(texts=[str(t) for t in data["texts"]], labels=data["labels"],
                   label_names=[str(x) for x in data["label_names"]], sources=[str(s) for s in data["sources"]],
                   slang=data["slang"] if "slang" in data else None, lengths=data["lengths"], buckets=data["buckets"],
                   batches=batches, input_names=inputs, baseline=data["baseline"], key=meta["key"], path=path)


def _run(runner, batches, n, n_labels, batch_size, show_bar, desc):
    """Logits [n, n_labels] of `runner` over the padded batches, in row order."""
    import numpy as np

    bar = None
    if show_bar:
        from trtbuild.calibrate import _progress_bar

        bar = _progress_bar(n, desc)
    out = np.zeros((n, n_labels), dtype=np.float32)
    try:
        for feeds, rows in batches:
            for i in range(0, len(rows), batch_size):
                sub = {name: a[i:i + batch_size] for name, a in feeds.items()}
                logits = np.asarray(runner.infer(sub))
                if logits.ndim != 2 or logits.shape[1] != n_labels:
                    raise TrtbuildError("candidate {} returns logits of shape {}, the baseline has {} labels; it is "
                                        "not a build of this model".format(getattr(runner, "path", "?"),
                                                                            list(logits.shape), n_labels))
                out[rows[i:i + batch_size]] = logits
                if bar is not None:
                    bar.update(len(rows[i:i + batch_size]))
    finally:
        if bar is not None:
            bar.close()
    return out


def run_candidate(evalset, candidate, batch_size=32, show_bar=False, runner=None):
    """Logits of a candidate (a path, or an open runner) over the eval set; refuses mismatched inputs."""
    from trtbuild.runners import runner_for

    own = runner is None
    runner = runner or runner_for(candidate)
    try:
        got, want = sorted(runner.input_names), sorted(evalset.input_names)
        if got != want:
            raise TrtbuildError("candidate {} takes inputs {}, the baseline model takes {}; verify a build of the "
                                "same export".format(candidate, ", ".join(got), ", ".join(want)))
        return _run(runner, evalset.batches, len(evalset), len(evalset.label_names), batch_size, show_bar,
                    os.path.basename(str(candidate)))
    finally:
        if own:
            runner.close()


# ---------------------------------------------------------------------------------------------
# Metrics

def _softmax(x):
    import numpy as np

    z = x.astype(np.float64) - x.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _macro_f1_counts(y, pred, classes, idx=None):
    """Macro-F1 over `classes`; with idx [B, n] (bootstrap resamples) one value per resample."""
    import numpy as np

    f1s = []
    for k in classes:
        tp = (y == k) & (pred == k)
        fp = (y != k) & (pred == k)
        fn = (y == k) & (pred != k)
        if idx is not None:
            tp, fp, fn = tp[idx].sum(-1), fp[idx].sum(-1), fn[idx].sum(-1)
        else:
            tp, fp, fn = tp.sum(), fp.sum(), fn.sum()
        denom = 2 * tp + fp + fn
        f1s.append(np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 0.0))
    return np.mean(f1s, axis=0)


def drift_metrics(y, base_logits, cand_logits, bootstrap=1000, seed=0):
    """Accuracy / macro-F1 of baseline and candidate, their drop in points with a paired bootstrap 95 %
    interval, flip rate, |logit diff| and mean KL(baseline || candidate). Macro-F1 averages over the true
    labels present in `y`."""
    import numpy as np

    n = len(y)
    pb, pc = base_logits.argmax(-1), cand_logits.argmax(-1)
    classes = sorted(set(int(v) for v in y))
    acc_b, acc_c = float((pb == y).mean()), float((pc == y).mean())
    f1_b, f1_c = float(_macro_f1_counts(y, pb, classes)), float(_macro_f1_counts(y, pc, classes))
    out = {
        "texts": int(n),
        "baseline": {"accuracy": acc_b, "macro_f1": f1_b},
        "candidate": {"accuracy": acc_c, "macro_f1": f1_c},
        "accuracy_drop_pt": 100.0 * (acc_b - acc_c),
        "macro_f1_drop_pt": 100.0 * (f1_b - f1_c),
    }
    if bootstrap and n > 1:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(bootstrap, n))
        acc_d = ((pb == y)[idx].mean(-1) - (pc == y)[idx].mean(-1)) * 100.0
        f1_d = (_macro_f1_counts(y, pb, classes, idx) - _macro_f1_counts(y, pc, classes, idx)) * 100.0
        out["accuracy_drop_ci95"] = [float(np.percentile(acc_d, 2.5)), float(np.percentile(acc_d, 97.5))]
        out["macro_f1_drop_ci95"] = [float(np.percentile(f1_d, 2.5)), float(np.percentile(f1_d, 97.5))]
    else:
        out["accuracy_drop_ci95"] = out["macro_f1_drop_ci95"] = None
    diff = np.abs(base_logits.astype(np.float64) - cand_logits.astype(np.float64))
    p, q = _softmax(base_logits), _softmax(cand_logits)
    kl = (p * (np.log(np.maximum(p, 1e-30)) - np.log(np.maximum(q, 1e-30)))).sum(-1)
    out.update({"flips": int((pb != pc).sum()), "flip_rate": float((pb != pc).mean()),
                "logit_max_abs_diff": float(diff.max()), "logit_mean_abs_diff": float(diff.mean()),
                "mean_kl": float(kl.mean())})
    return out


# ---------------------------------------------------------------------------------------------
# The report

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
class VerifyReport:
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

    def __bool__(self):
        return all(g.passed for g in self.gates)

    @property
    def passed(self):
        return bool(self)

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
            "seconds": self.seconds, "paths": self.paths,
        }

    def to_junit(self):
        from xml.sax.saxutils import escape as _escape
        from xml.sax.saxutils import quoteattr as _quoteattr

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
        from trtbuild.report import verify_html

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
    import numpy as np

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
                        device=device)


# ---------------------------------------------------------------------------------------------
# Candidates

def resolve_candidate(workdir, candidate):
    """A path, or a name: qdq (WORKDIR/model.qdq.onnx), fp32 (model.onnx), fp16 / int8 (the engine built for
    this GPU and TensorRT, or the only one there is). Returns (path, target name)."""
    import glob

    wd = WorkDir(workdir)
    if candidate in ("qdq", "fp32"):
        path = wd.path("model.qdq.onnx") if candidate == "qdq" else wd.onnx
        if not os.path.isfile(path):
            raise TrtbuildError("{} not found; run `trtbuild calibrate {}` first".format(path, wd.root))
        return path, candidate
    if candidate in ("fp16", "int8"):
        found = sorted(glob.glob(wd.path("engines", "*", candidate + ".engine")))
        if not found:
            raise TrtbuildError("no {} engine under {}; run `trtbuild build {}{}` on the GPU machine".format(
                candidate, wd.path("engines"), wd.root, " --int8" if candidate == "int8" else ""))
        if len(found) > 1:
            try:
                from trtbuild.build import arch_dir, gpu_info, import_tensorrt

                here = os.path.join(arch_dir(wd.root, gpu_info()["compute_capability"], import_tensorrt().__version__),
                                    candidate + ".engine")
                found = [here] if os.path.isfile(here) else found[:1]
            except TrtbuildError:
                found = found[:1]
        path = found[0]
        return path, "{}-{}".format(candidate, os.path.basename(os.path.dirname(path)))
    if not os.path.exists(candidate):
        raise TrtbuildError("candidate {} not found; pass an .onnx or .engine path, or one of {}".format(
            candidate, ", ".join(CANDIDATE_NAMES)))
    path = candidate
    stem = os.path.splitext(os.path.basename(path))[0].replace(".", "-")
    if os.path.splitext(path)[1].lower() in (".engine", ".plan"):
        stem = "{}-{}".format(stem, os.path.basename(os.path.dirname(os.path.abspath(path))))
    if os.path.abspath(path) == os.path.abspath(wd.path("model.qdq.onnx")):
        stem = "qdq"
    return path, stem


def verify_candidate(config, candidate, evalset=None, eval_paths=None, report_dir=None, progress=_noop,
                     show_bar=False, write=True, target=None):
    """Verify one candidate (path or name); returns its VerifyReport (written under report_dir)."""
    from trtbuild.runners import runner_for

    evalset = evalset or prepare_eval(config, eval_paths, progress=progress, show_bar=show_bar)
    path, name = resolve_candidate(config.workdir, candidate)
    target = target or name
    start = time.perf_counter()
    runner = runner_for(path)
    device = None
    try:
        kind = type(runner).__name__
        device = getattr(runner, "device", None)
        progress("candidate {} ({}): {} texts".format(path, kind, len(evalset)))
        logits = run_candidate(evalset, path, config.verify.batch_size, show_bar, runner=runner)
    finally:
        runner.close()
    report = evaluate(evalset, logits, config.verify, target, path, kind, WorkDir(config.workdir).onnx,
                      seconds=time.perf_counter() - start, device=device)
    if write:
        report.write(report_dir or WorkDir(config.workdir).path("reports"))
    return report


def default_candidates(workdir):
    """What `trtbuild verify` checks without --candidate: the Q/DQ ONNX when there is one."""
    if os.path.isfile(WorkDir(workdir).path("model.qdq.onnx")):
        return ["qdq"]
    raise TrtbuildError("nothing to verify in {}: run `trtbuild calibrate` first, or pass --candidate PATH "
                        "(an .onnx or a trtbuild .engine) or a name ({})".format(workdir, ", ".join(CANDIDATE_NAMES)))


def verify(config, candidates=None, eval_paths=None, report_dir=None, progress=_noop, show_bar=False):
    """Verify each candidate against the FP32 baseline; returns the VerifyReports (all written)."""
    candidates = list(candidates or default_candidates(config.workdir))
    for c in candidates:  # resolve every name first: a typo fails before the baseline runs
        resolve_candidate(config.workdir, c)
    evalset = prepare_eval(config, eval_paths, progress=progress, show_bar=show_bar)
    return [verify_candidate(config, c, evalset=evalset, report_dir=report_dir, progress=progress,
                             show_bar=show_bar) for c in candidates]
