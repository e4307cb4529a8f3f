"""The eval set: labelled texts tokenized into the length buckets, tagged with their slices, with the ONNX
Runtime FP32 baseline logits, cached in WORKDIR/cache/verify-<key>.npz.

The key hashes the ONNX, the eval files, the lexicon, the calibration corpus files and the settings and
needs no tokenizer, so the GPU side (Python 3.9, numpy + TensorRT) finds the cache and runs no tokenizer,
torch or baseline.

Slang slices: `text:slang` holds the texts with a lexicon term (any kind; data.lexicon, else the lexicon
shipped with trtbuild), `text:plain` the others, and `text:slang-unseen` the texts with a lexicon term that
the calibration corpus (data.calibration, sampled to calibrate.max_texts as calibrate samples it) never
uses: the activations INT8 calibration never saw.
"""

import contextlib
import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from trtbuild._util import first_line, noop, progress_bar
from trtbuild.data import (
    TermMatcher, batches_from_arrays, batches_to_arrays, check_token_ids, lexicon_source, load_corpus, load_lexicon,
    normalize_term, resolve_lexicon, sample_texts, tokenize_into_buckets
)
from trtbuild.errors import TrtbuildError
from trtbuild.workdir import WorkDir, atomic_path, check_export, sha256_file

CACHE_FORMAT = "trtbuild-verify-cache/3"
UNSEEN_TERMS = 20  # unseen slang terms a report lists, most eval texts first


@dataclass
class EvalSet:
    """Tokenized, labelled eval texts with their slices and the FP32 baseline logits (numpy arrays)."""

    texts: List[str]
    labels: "object"  # int64 [N]
    label_names: List[str]
    sources: List[str]  # the eval file each text came from
    slang: "object"  # bool [N]: texts with a lexicon term (None: no lexicon)
    lengths: "object"  # int64 [N] tokens incl. specials, before truncation
    buckets: "object"  # int64 [N] the bucket each text was padded to
    batches: list  # [(feeds {input: int64 [b, bucket]}, rows int64 [b])]
    input_names: List[str]
    baseline: "object"  # float32 [N, labels]
    key: str
    path: str  # the cache file
    slang_unseen: "object" = None  # bool [N]: texts with a lexicon term no calibration text uses (None: no corpus)
    unseen_terms: List[Tuple[str, str]] = field(default_factory=list)  # (term, kind) of those terms, lexicon order
    lexicon: Optional[str] = None  # the lexicon of the slang slices: "packaged" or its path
    _unseen_counts: Optional[list] = field(default=None, init=False, repr=False, compare=False)

    def __len__(self):
        return len(self.texts)

    def slang_unseen_terms(self, top=UNSEEN_TERMS):
        # type: (Optional[int]) -> List[dict]
        """The unseen lexicon terms these texts use: [{term, kind, texts}], most texts first (`top` of them; None:
        all). Counted on this set's texts, so a subset counts its own."""
        if self._unseen_counts is None:
            matcher = TermMatcher([t for t, _ in self.unseen_terms])
            counts = [0] * len(self.unseen_terms)
            for text in self.texts:
                for i in matcher.find(text):
                    counts[i] += 1
            self._unseen_counts = counts
        counts = self._unseen_counts
        ranked = sorted((i for i, n in enumerate(counts) if n), key=lambda i: (-counts[i], i))
        return [{"term": self.unseen_terms[i][0], "kind": self.unseen_terms[i][1], "texts": counts[i]}
                for i in ranked[:top]]

    def subset(self, rows):
        """The same eval set restricted to `rows` (indices), renumbered 0..len(rows)-1, batches kept."""
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
                       baseline=self.baseline[rows], key=self.key + "-subset", path=self.path,
                       slang_unseen=pick(self.slang_unseen), unseen_terms=list(self.unseen_terms), lexicon=self.lexicon)

    def slices(self):
        """name -> bool mask; 'all' first, then eval sets, text kind (slang, slang-unseen when >= 1 text, plain),
        length bucket and label."""
        out = {"all": np.ones(len(self), dtype=bool)}
        src = np.asarray(self.sources)
        sources = sorted(set(self.sources))
        for s in sources:
            out["set:" + _short_source(s, sources)] = src == s
        if self.slang is not None:
            out["text:slang"] = self.slang.copy()
        if self.slang_unseen is not None and self.slang_unseen.any():
            out["text:slang-unseen"] = self.slang_unseen.copy()
        if self.slang is not None:
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


def _label_ids(corpus, label_names, paths, label_column):
    """Map each text's label (a label name, or an integer id) to the model's id; one-line errors."""
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


def eval_key(record, eval_paths, buckets, text_column, label_column, lexicon, calibration=None):
    """The cache key: hashes of everything the eval tensors, slices and baseline depend on (no tokenizer needed).
    `calibration`: `calibration_key(config)`, the corpus the text:slang-unseen slice is measured against."""
    parts = {
        "format": CACHE_FORMAT, "onnx": record["sha256"]["onnx"], "labels": record["labels"],
        "inputs": record["inputs"], "buckets": list(buckets), "columns": [text_column, label_column],
        "eval": [[os.path.normpath(p), sha256_file(p)] for p in eval_paths],
        "lexicon": sha256_file(lexicon) if lexicon else None, "calibration": calibration,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def calibration_key(config):
    """The calibration files (path, sha256; None where missing) and the sample calibrate draws; None: no corpus."""
    paths = [os.fspath(p) for p in config.data.calibration]
    if not paths:
        return None
    ccfg = config.calibrate
    return {"files": [[os.path.normpath(p), sha256_file(p) if os.path.isfile(p) else None] for p in paths],
            "sample": None if ccfg.max_texts is None else [ccfg.max_texts, ccfg.sample_seed]}


def calibration_texts(config, progress=noop):
    """The calibration texts the coverage report counts: data.calibration loaded as calibrate loads it, sampled
    to calibrate.max_texts with calibrate.sample_seed. None, with a note, where there is no corpus to read."""
    paths = [os.fspath(p) for p in config.data.calibration]
    if not paths:
        progress("  no text:slang-unseen slice: no data.calibration in the config")
        return None
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        progress("  no text:slang-unseen slice: calibration file {} not found".format(missing[0]))
        return None
    try:
        corpus = load_corpus(paths, config.data.text_column, config.data.label_column, None, "skip")
    except TrtbuildError as e:
        progress("  no text:slang-unseen slice: {}".format(e))
        return None
    return sample_texts(corpus.texts, config.calibrate.max_texts, config.calibrate.sample_seed)


def slang_tags(texts, lexicon, calibration=None):
    """(slang, slang_unseen, unseen_terms) for `texts`: bool [N] texts with a lexicon term; bool [N] texts with a
    term no calibration text uses (None without `calibration` texts); and those terms as (term, kind), lexicon
    order. Spellings that match alike ("yyds" / "YYDS") are one term, shown in lower case where listed."""
    groups = OrderedDict()  # normalized spelling -> [spellings], kind of the first
    for entry in lexicon:
        groups.setdefault(normalize_term(entry.term), ([], entry.kind))[0].append(entry.term)
    terms = [(norm if norm in spellings else spellings[0], kind) for norm, (spellings, kind) in groups.items()]
    matcher = TermMatcher([t for t, _ in terms])
    found = [matcher.find(t) for t in texts]
    slang = np.asarray([bool(f) for f in found], dtype=bool)
    if calibration is None:
        return slang, None, []
    seen = set()
    for text in calibration:
        seen.update(matcher.find(text))
    unseen = set().union(*found) - seen if found else set()
    slang_unseen = np.asarray([bool(f & unseen) for f in found], dtype=bool)
    return slang, slang_unseen, [terms[i] for i in sorted(unseen)]


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


def prepare_eval(config, eval_paths=None, progress=noop, show_bar=False):
    """The eval set of `config` with its FP32 baseline: from the cache, or tokenized and run once (CPU)."""
    wd = WorkDir(config.workdir)
    record = check_export(wd.root)
    eval_paths = [os.fspath(p) for p in (eval_paths or config.data.eval)]
    _check_files(eval_paths, config.data.lexicon)
    lexicon = resolve_lexicon(config.data.lexicon)  # the packaged one without data.lexicon
    buckets = config.data.usable_buckets(record["max_length"])
    key = eval_key(record, eval_paths, buckets, config.data.text_column, config.data.label_column, lexicon,
                   calibration_key(config))
    path = os.path.join(wd.cache, "verify-{}.npz".format(key))
    if os.path.isfile(path):
        try:
            evalset = load_eval(path)
            progress("eval set and FP32 baseline from the cache ({})".format(path))
            return evalset
        except TrtbuildError as e:  # a cache: made again where it can be (the CPU side), else the error stands
            progress("  {}: making it again".format(e))
    return _make_eval(config, wd, record, eval_paths, lexicon, buckets, key, path, progress, show_bar)


def _make_eval(config, wd, record, eval_paths, lexicon, buckets, key, path, progress, show_bar):
    from trtbuild.backends.ort import OrtRunner

    corpus = load_corpus(eval_paths, config.data.text_column, config.data.label_column)
    labels = _label_ids(corpus, record["labels"], eval_paths, config.data.label_column)
    slang, slang_unseen, unseen_terms = slang_tags(corpus.texts, load_lexicon(lexicon),
                                                   calibration_texts(config, progress))
    progress("  slang slices ({} lexicon): {} of {} texts use a term{}".format(
        lexicon_source(config.data.lexicon), int(slang.sum()), len(slang), "" if slang_unseen is None else
        ", {} one the calibration corpus never uses".format(int(slang_unseen.sum()))))
    try:
        tokenizer = wd.load_tokenizer()
    except ImportError:
        raise TrtbuildError("no cached eval set for these eval files in {}; run `trtbuild verify` once where "
                            "transformers is installed (the CPU side) to tokenize and cache it".format(
                                wd.cache)) from None
    tok = tokenize_into_buckets(tokenizer, corpus.texts, buckets)
    check_token_ids(tok, record, wd.root)
    bucket_of = np.zeros(len(corpus), dtype=np.int64)
    for b, rows in tok.buckets.items():
        bucket_of[rows] = b
    batch_size = config.verify.batch_size
    batches = [(b.inputs, np.asarray(b.rows, dtype=np.int64))
               for b in tok.batches(record["inputs"], batch_size, pad_id=tokenizer.pad_token_id or 0)]
    progress("FP32 baseline: {} eval texts in ONNX Runtime (CPU); per bucket {}".format(
        len(corpus), ", ".join("{}: {}".format(b, len(r)) for b, r in sorted(tok.buckets.items()))))
    with OrtRunner(wd.onnx) as base:
        baseline = run_batches(base, batches, len(corpus), len(record["labels"]), batch_size, show_bar, "FP32 baseline")
    arrays = {"texts": np.asarray(corpus.texts), "labels": labels, "label_names": np.asarray(record["labels"]),
              "sources": np.asarray(corpus.sources), "lengths": np.asarray(tok.lengths, dtype=np.int64),
              "buckets": bucket_of, "inputs": np.asarray(record["inputs"]), "baseline": baseline,
              "meta": np.asarray(json.dumps({"format": CACHE_FORMAT, "key": key, "eval": eval_paths,
                                             "lexicon": lexicon_source(config.data.lexicon),
                                             "calibration": [os.fspath(p) for p in config.data.calibration],
                                             "onnx_sha256": record["sha256"]["onnx"]}))}
    arrays["slang"] = slang
    if slang_unseen is not None:
        arrays["slang_unseen"] = slang_unseen
        arrays["unseen_terms"] = np.asarray(unseen_terms, dtype=str).reshape(len(unseen_terms), 2)
    arrays.update(batches_to_arrays(batches, dtype=np.int32))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with contextlib.suppress(OSError):
        os.remove(path)  # an unreadable earlier copy
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return load_eval(path)


def load_eval(path):
    """An EvalSet from its cache file (numpy only)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
                raise ValueError("format {!r}, expected {}".format(
                    meta.get("format") if isinstance(meta, dict) else meta, CACHE_FORMAT))
            inputs = [str(x) for x in data["inputs"]]
            return EvalSet(texts=[str(t) for t in data["texts"]], labels=data["labels"],
                           label_names=[str(x) for x in data["label_names"]], sources=[str(s) for s in data["sources"]],
                           slang=data["slang"] if "slang" in data else None, lengths=data["lengths"],
                           buckets=data["buckets"], batches=batches_from_arrays(data, inputs), input_names=inputs,
                           baseline=data["baseline"], key=meta["key"], path=path,
                           slang_unseen=data["slang_unseen"] if "slang_unseen" in data else None,
                           unseen_terms=[(str(t), str(k)) for t, k in data["unseen_terms"]]
                           if "unseen_terms" in data else [], lexicon=meta.get("lexicon"))
    except Exception as e:  # a truncated, edited or foreign file
        raise TrtbuildError("eval cache {} is unreadable ({}); delete it and run verify again".format(
            path, first_line(e)[:120])) from None


def run_batches(runner, batches, n, n_labels, batch_size, show_bar, desc):
    """Logits [n, n_labels] of `runner` over the padded batches, in row order."""
    bar = progress_bar(n, desc) if show_bar else None
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
