"""Does the calibration set speak the language of production traffic?

INT8 calibration only sees the activation ranges its texts produce: a calibration set without the internet
slang, pinyin abbreviations and emoji that production posts carry (蚌埠住了, yyds, 😭) calibrates ranges that
real traffic then overflows. `coverage_report` measures, before any engine is built:

- which lexicon terms (trtbuild.data.LexiconEntry) occur in the calibration set and in an eval set;
- **slang coverage**, the gated number: the share of the relevant terms of `kinds` that the calibration set
  contains, where relevant means "occurs in the eval set" when one is given (what production-like traffic
  uses), else every term of `kinds` in the lexicon;
- per corpus, what the tokenizer makes of the texts: UNK rate, tokens per character, texts cut by the
  largest bucket, token-length histogram over the buckets; and how many texts carry emoji.

The eval set's terms the calibration set never uses are listed as missing terms; `trtbuild verify` scores
the eval texts that use such a term as the slice `text:slang-unseen` (reports/verify-<target>.html).

Terms are found by `trtbuild.data.TermMatcher` (case-insensitive ASCII, word boundaries for ASCII
letters and digits, emoji variation selectors ignored). Lexicon entries of one kind that match identically ("yyds" / "YYDS") are counted as one term, shown under
its lower-case spelling when listed (else the first), with the others as `variants`.

    report = coverage_report(cal_texts, load_lexicon(tsv), tokenizer, eval_texts=eval_texts,
                             min_slang_coverage=0.6)
    write_coverage(report, "out/model")        # coverage.json + coverage.html
    if not report:
        raise SomeGateError(report.failure_message())
"""

import math
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from trtbuild.config import DEFAULT_BUCKETS
from trtbuild.data import LEXICON_KINDS, TermMatcher, load_lexicon, normalize_term
from trtbuild.data import lexicon_source as _lexicon_source
from trtbuild.errors import TrtbuildError
from trtbuild.html import escape, page
from trtbuild.workdir import COVERAGE_HTML, COVERAGE_JSON, atomic_write_json, atomic_write_text

try:  # optional: the `emoji` package knows every emoji sequence; the fallback below is an approximation
    import emoji as _emoji_lib
except ImportError:  # pragma: no cover - depends on the environment
    _emoji_lib = None

__all__ = [
    "TermHits", "KindCoverage", "CorpusStats",
    "CoverageReport", "coverage_report", "write_coverage", "count_emoji",
]

TOP_TERMS = 50  # terms by calibration hits in to_dict / to_html
MESSAGE_TERMS = 20  # missing terms named in failure_message
TOKENIZER_BATCH = 1024
UNK_TOP = 20  # most frequent strings that became the UNK token, per corpus
VERIFY_SLICE = "text:slang-unseen"  # verify's slice of eval texts with terms the calibration set never uses
VERIFY_REPORT = "reports/verify-qdq.html"  # the Q/DQ model's verify report, relative to the work directory

# ---------------------------------------------------------------------------------------------
# Emoji

_EMOJI_BASE = (u"[\u231A\u231B\u2328\u23CF\u23E9-\u23F3\u23F8-\u23FA\u2600-\u27BF\u2B05-\u2B07\u2B1B\u2B1C"
               u"\u2B50\u2B55\u3030\u303D\u3297\u3299\U0001F000-\U0001F1E5\U0001F200-\U0001FAFF]")
_EMOJI_MOD = u"[\uFE0F\U0001F3FB-\U0001F3FF]*"
_EMOJI_FALLBACK = re.compile(
    u"[\U0001F1E6-\U0001F1FF]{2}"  # flags: two regional indicators
    u"|[0-9#*]\uFE0F?\u20E3"  # keycaps
    u"|" + _EMOJI_BASE + _EMOJI_MOD + u"(?:\u200D" + _EMOJI_BASE + _EMOJI_MOD + u")*")


def count_emoji(text):
    # type: (str) -> int
    """Emoji in `text`, a ZWJ / skin-tone / flag sequence counting once (the `emoji` package when installed,
    else a Unicode-range approximation)."""
    if _emoji_lib is not None:
        return len(_emoji_lib.emoji_list(text))
    return len(_EMOJI_FALLBACK.findall(text))


# ---------------------------------------------------------------------------------------------
# The report

def _share(part, whole):
    return (float(part) / whole) if whole else None


def _pct(x, floor=False):
    """0.4167 -> '41.7%'; floor=True rounds down to whole percent (so a failing coverage never shows as the
    gate's own number)."""
    if x is None:
        return "n/a"
    if floor:
        return "{}%".format(int(math.floor(x * 100 + 1e-9)))
    return "{:.1f}%".format(x * 100)


def _gate_pct(x):
    return "{:g}%".format(round(x * 100, 4))


@dataclass
class TermHits:
    """One lexicon term: texts of each corpus that contain it (eval None when no eval set was given)."""

    term: str
    kind: str
    calibration: int
    eval: Optional[int] = None
    variants: Tuple[str, ...] = ()  # other lexicon spellings that match identically ("YYDS" for "yyds")

    def to_dict(self):
        d = OrderedDict([("term", self.term), ("kind", self.kind), ("calibration_hits", self.calibration),
                         ("eval_hits", self.eval)])
        if self.variants:
            d["variants"] = list(self.variants)
        return d


@dataclass
class KindCoverage:
    """Lexicon coverage of one kind: terms, and how many hit the calibration (and eval) set."""

    kind: str
    terms: int
    calibration_covered: int  # terms with >= 1 calibration hit
    eval_present: Optional[int] = None  # terms with >= 1 eval hit
    eval_present_covered: Optional[int] = None  # of those, terms with >= 1 calibration hit
    top: List[TermHits] = field(default_factory=list)  # most frequent in calibration

    @property
    def calibration_share(self):
        return _share(self.calibration_covered, self.terms)

    @property
    def eval_share_covered(self):
        return None if self.eval_present is None else _share(self.eval_present_covered, self.eval_present)

    def to_dict(self):
        return OrderedDict([
            ("terms", self.terms), ("calibration_covered", self.calibration_covered),
            ("calibration_share", self.calibration_share), ("eval_present", self.eval_present),
            ("eval_present_covered", self.eval_present_covered), ("eval_share_covered", self.eval_share_covered),
            ("top", [t.to_dict() for t in self.top]),
        ])


@dataclass
class CorpusStats:
    """What one corpus looks like to the tokenizer and the lexicon.

    Characters never count whitespace (it yields no tokens). `tokens` and `unk_tokens` count non-special
    tokens; `histogram` counts texts by tokenized length incl. the special tokens: bucket b holds the texts
    longer than the previous bucket and at most b tokens, "over" those longer than the largest bucket
    (the ones calibration truncates).
    """

    name: str
    texts: int
    characters: int
    tokens: int
    unk_tokens: Optional[int]  # None when the tokenizer has no unk token
    truncated: int
    histogram: "OrderedDict[str, int]"  # str(bucket) -> texts, then "over"
    emoji_texts: int
    emoji: int
    term_texts: int  # texts with >= 1 hit of the gated kinds
    max_length: int = 0
    unk_top: List[Tuple[str, int]] = field(default_factory=list)  # strings that became UNK, most frequent first

    @property
    def unk_rate(self):
        return None if self.unk_tokens is None else _share(self.unk_tokens, self.tokens)

    @property
    def tokens_per_char(self):
        return _share(self.tokens, self.characters)

    @property
    def truncated_share(self):
        return _share(self.truncated, self.texts)

    @property
    def emoji_text_share(self):
        return _share(self.emoji_texts, self.texts)

    @property
    def emoji_per_1k_chars(self):
        s = _share(self.emoji, self.characters)
        return None if s is None else s * 1000.0

    @property
    def term_text_share(self):
        return _share(self.term_texts, self.texts)

    def to_dict(self):
        return OrderedDict([
            ("texts", self.texts), ("characters", self.characters), ("tokens", self.tokens),
            ("unk_tokens", self.unk_tokens), ("unk_rate", self.unk_rate), ("tokens_per_char", self.tokens_per_char),
            ("max_length", self.max_length), ("truncated", self.truncated),
            ("truncated_share", self.truncated_share), ("length_histogram", OrderedDict(self.histogram)),
            ("emoji_texts", self.emoji_texts), ("emoji_text_share", self.emoji_text_share),
            ("emoji", self.emoji), ("emoji_per_1k_chars", self.emoji_per_1k_chars),
            ("term_texts", self.term_texts), ("term_text_share", self.term_text_share),
            ("unk_top", [[s, n] for s, n in self.unk_top]),
        ])


@dataclass
class CoverageReport:
    """The result of `coverage_report`. Truthy when the gate passes (or there is none)."""

    kinds: Tuple[str, ...]
    buckets: Tuple[int, ...]
    min_slang_coverage: Optional[float]
    basis: str  # "eval": relevant terms are those the eval set uses; "lexicon": every term of `kinds`
    relevant_terms: int
    covered_terms: int
    terms: List[TermHits]  # every term of `kinds`, in lexicon order
    missing_terms: List[TermHits]  # relevant terms without a calibration hit, most eval hits first
    lexicon: "OrderedDict[str, KindCoverage]"  # every kind in the lexicon, gated or not
    calibration: CorpusStats
    eval: Optional[CorpusStats] = None
    suspect: Dict[str, int] = field(default_factory=dict)  # calibration texts: "binary" skipped, "long" cut
    lexicon_source: Optional[str] = None  # "packaged" (the lexicon shipped with trtbuild), a path, or unknown

    def _suspect_phrase(self):
        parts = []
        if self.suspect.get("binary"):
            parts.append("{} binary-looking text(s) skipped".format(self.suspect["binary"]))
        if self.suspect.get("long"):
            parts.append("{} very long text(s) cut".format(self.suspect["long"]))
        return "; ".join(parts)

    @property
    def slang_coverage(self):
        # type: () -> Optional[float]
        """Share of the relevant terms the calibration set contains; None when no term is relevant."""
        return _share(self.covered_terms, self.relevant_terms)

    @property
    def passed(self):
        # type: () -> bool
        if self.min_slang_coverage is None or self.slang_coverage is None:
            return True  # no gate, or nothing to cover (the eval set uses none of the terms)
        return self.slang_coverage >= self.min_slang_coverage - 1e-12

    def __bool__(self):
        return self.passed

    def top_terms(self, n=TOP_TERMS):
        # type: (int) -> List[TermHits]
        """Terms of `kinds` with calibration hits, most hits first (then most eval hits)."""
        hit = [(i, t) for i, t in enumerate(self.terms) if t.calibration > 0]
        hit.sort(key=lambda it: (-it[1].calibration, -(it[1].eval or 0), it[0]))
        return [t for _, t in hit[:n]]

    # -- wording --

    @property
    def _what(self):
        what = "the slang" if tuple(self.kinds) == ("slang",) else "the {} terms".format("/".join(self.kinds))
        return what + (" in the eval set" if self.basis == "eval" else " in the lexicon")

    def _coverage_phrase(self):
        if self.slang_coverage is None:
            return "calibration set: no {} to cover ({} uses none)".format(
                self._what, "the eval set" if self.basis == "eval" else "the lexicon has")
        return "calibration set covers {} of {} ({} of {} terms{})".format(
            _pct(self.slang_coverage, floor=True), self._what, self.covered_terms, self.relevant_terms,
            "" if self.min_slang_coverage is None else "; gate {}".format(_gate_pct(self.min_slang_coverage)))

    def _missing_phrase(self, limit=MESSAGE_TERMS):
        shown = [t.term if t.eval is None else "{} ({})".format(t.term, t.eval) for t in self.missing_terms[:limit]]
        rest = len(self.missing_terms) - len(shown)
        return ", ".join(shown) + (", ... (and {} more)".format(rest) if rest > 0 else "")

    def failure_message(self):
        # type: () -> str
        """One line saying why the gate failed and which terms are missing (at most 20); "" when it passed."""
        if self.passed:
            return ""
        return "{}; missing: {}".format(self._coverage_phrase(), self._missing_phrase())

    def summary_lines(self):
        # type: () -> List[str]
        """A compact plain-text table for the terminal (about ten lines)."""
        verdict = "" if self.min_slang_coverage is None else " -- {}".format("passed" if self.passed else "FAILED")
        lines = [self._coverage_phrase() + verdict]
        corpora = [self.calibration] + ([self.eval] if self.eval is not None else [])
        rows = [
            ("texts", lambda c: str(c.texts)),
            ("with " + "/".join(self.kinds), lambda c: _pct(c.term_text_share)),
            ("with emoji / per 1k chars", lambda c: "{} / {}".format(
                _pct(c.emoji_text_share),
                "n/a" if c.emoji_per_1k_chars is None else "{:.1f}".format(c.emoji_per_1k_chars))),
            ("UNK rate", lambda c: "n/a" if c.unk_rate is None else "{:.2f}%".format(c.unk_rate * 100)),
            ("tokens per char", lambda c: "n/a" if c.tokens_per_char is None else "{:.3f}".format(c.tokens_per_char)),
            ("truncated (>{})".format(self.buckets[-1]), lambda c: "{} ({})".format(c.truncated, _pct(c.truncated_share))),
            ("length " + "/".join(list(map(str, self.buckets)) + ["over"]),
             lambda c: "/".join(str(n) for n in c.histogram.values())),
        ]
        table = [[label] + [fmt(c) for c in corpora] for label, fmt in rows]
        head = [""] + [c.name for c in corpora]
        widths = [max(len(r[i]) for r in table + [head]) for i in range(len(head))]
        for r in [head] + table:
            lines.append((r[0].ljust(widths[0]) + "".join(
                "  " + r[i].rjust(widths[i]) for i in range(1, len(r)))).rstrip())
        lines.append("lexicon (calibration hits): " + ", ".join(
            "{} {}/{}".format(k, v.calibration_covered, v.terms) for k, v in self.lexicon.items()))
        if self.missing_terms:
            lines.append("missing: " + self._missing_phrase(limit=10))
        if self.suspect:
            lines.append("suspect input: " + self._suspect_phrase())
        return lines

    # -- machine- and human-readable forms --

    def to_dict(self):
        """JSON-ready (only str keys, no NaN): the gate, the numbers, the top 50 terms, all missing terms."""
        return OrderedDict([
            ("gate", OrderedDict([
                ("min_slang_coverage", self.min_slang_coverage), ("slang_coverage", self.slang_coverage),
                ("passed", self.passed), ("basis", self.basis), ("kinds", list(self.kinds)),
                ("relevant_terms", self.relevant_terms), ("covered_terms", self.covered_terms),
                ("missing_terms", len(self.missing_terms)), ("message", self.failure_message()),
            ])),
            ("buckets", list(self.buckets)),
            ("corpora", OrderedDict([("calibration", self.calibration.to_dict()),
                                     ("eval", None if self.eval is None else self.eval.to_dict())])),
            ("lexicon", OrderedDict((k, v.to_dict()) for k, v in self.lexicon.items())),
            ("top_terms", [t.to_dict() for t in self.top_terms()]),
            ("missing_terms", [t.to_dict() for t in self.missing_terms]),
            ("suspect_texts", dict(self.suspect)),
            ("lexicon_source", self.lexicon_source),
            ("verify", OrderedDict([("slice", VERIFY_SLICE), ("report", VERIFY_REPORT), ("note", (
                "trtbuild verify reports the eval texts that use a lexicon term the calibration set never uses as "
                "the slice {} (reports/verify-<target>.json/.html)".format(VERIFY_SLICE)))])),
        ])

    def to_html(self):
        # type: () -> str
        """One self-contained page (inline CSS, no scripts, no external resources); every text escaped."""
        e = escape
        corpora = [self.calibration] + ([self.eval] if self.eval is not None else [])
        parts = ["<h1>Calibration coverage</h1>"]
        if self.min_slang_coverage is None:
            cls, verdict = "none", "no gate"
        elif self.passed:
            cls, verdict = "pass", "gate passed"
        else:
            cls, verdict = "fail", "gate FAILED"
        parts.append('<p class="gate {}">{}: {}</p>'.format(cls, e(verdict), e(self._coverage_phrase())))
        if self.lexicon_source:
            parts.append("<p>lexicon: {}</p>".format(
                "the one shipped with trtbuild (trtbuild/resources/slang_lexicon.tsv)"
                if self.lexicon_source == "packaged" else "<code>{}</code>".format(e(self.lexicon_source))))
        if self.suspect:
            parts.append('<p class="gate fail">suspect input in the calibration corpus: {}</p>'.format(
                e(self._suspect_phrase())))

        # summary table
        parts.append("<h2>Summary</h2><table><tr><th></th>" + "".join("<th>{}</th>".format(e(c.name)) for c in corpora)
                     + "</tr>")

        def row(label, fmt):
            parts.append("<tr><th>{}</th>{}</tr>".format(e(label), "".join(
                '<td class="n">{}</td>'.format(e(fmt(c))) for c in corpora)))

        row("texts", lambda c: c.texts)
        row("characters (without whitespace)", lambda c: c.characters)
        row("texts with {}".format("/".join(self.kinds)), lambda c: "{} ({})".format(c.term_texts, _pct(c.term_text_share)))
        row("texts with emoji", lambda c: "{} ({})".format(c.emoji_texts, _pct(c.emoji_text_share)))
        row("emoji per 1,000 characters",
            lambda c: "n/a" if c.emoji_per_1k_chars is None else "{:.2f}".format(c.emoji_per_1k_chars))
        row("UNK rate", lambda c: "n/a" if c.unk_rate is None else "{:.2f}%".format(c.unk_rate * 100))
        row("tokens per character", lambda c: "n/a" if c.tokens_per_char is None else "{:.3f}".format(c.tokens_per_char))
        row("longest text (tokens)", lambda c: c.max_length)
        row("truncated (> {} tokens)".format(self.buckets[-1]), lambda c: "{} ({})".format(c.truncated, _pct(c.truncated_share)))
        row("most frequent UNK", lambda c: ", ".join("{} ({})".format(s, n) for s, n in c.unk_top[:8]) or "-")
        parts.append("</table>")

        # length histogram, calibration vs eval, as shares of each corpus
        parts.append("<h2>Token length by bucket</h2><p>Share of each corpus's texts per bucket (length incl. "
                     'special tokens). <span class="bar cal" style="width:1em"></span> calibration '
                     '<span class="bar ev" style="width:1em"></span> eval</p><table class="hist">')
        labels = list(self.calibration.histogram)
        for label in labels:
            name = "over {}".format(self.buckets[-1]) if label == "over" else "&le; {}".format(e(label))
            cells = []
            for c, css in zip(corpora, ("cal", "ev")):
                n = c.histogram.get(label, 0)
                share = _share(n, c.texts) or 0.0
                cells.append('<div><span class="track"><span class="bar {}" style="width:{:.1f}%"></span></span> '
                             '{} ({})</div>'.format(css, share * 100, n, e(_pct(share))))
            parts.append("<tr><th>{}</th><td>{}</td></tr>".format(name, "".join(cells)))
        parts.append("</table>")

        # lexicon coverage per kind
        parts.append("<h2>Lexicon coverage by kind</h2><table><tr><th>kind</th><th>terms</th>"
                     "<th>in calibration</th><th>in eval</th><th>eval terms also in calibration</th>"
                     "<th>most frequent in calibration</th></tr>")
        for k, v in self.lexicon.items():
            parts.append('<tr><td>{}{}</td><td class="n">{}</td><td class="n">{} ({})</td><td class="n">{}</td>'
                         '<td class="n">{}</td><td>{}</td></tr>'.format(
                             e(k), " (gated)" if k in self.kinds else "", v.terms, v.calibration_covered,
                             e(_pct(v.calibration_share)), "-" if v.eval_present is None else v.eval_present,
                             "-" if v.eval_present is None else "{} ({})".format(
                                 v.eval_present_covered, _pct(v.eval_share_covered)),
                             e(", ".join("{} ({})".format(t.term, t.calibration) for t in v.top[:10]))))
        parts.append("</table>")

        def term_table(title, rows, note):
            parts.append("<h2>{}</h2><p>{}</p>".format(e(title), e(note)))
            if not rows:
                parts.append("<p>none</p>")
                return
            parts.append("<table><tr><th>term</th><th>kind</th><th>calibration hits</th><th>eval hits</th></tr>")
            for t in rows:
                term = e(t.term) + ("".join(" / " + e(v) for v in t.variants))
                parts.append('<tr><td>{}</td><td>{}</td><td class="n">{}</td><td class="n">{}</td></tr>'.format(
                    term, e(t.kind), t.calibration, "-" if t.eval is None else t.eval))
            parts.append("</table>")

        term_table("Missing terms ({})".format(len(self.missing_terms)), self.missing_terms,
                   "Relevant terms the calibration set never uses" + (
                       ", most used in the eval set first." if self.basis == "eval" else "."))
        parts.append('<p>How these terms cost accuracy: <code>trtbuild verify</code> scores the eval '
                     'texts that use a lexicon term the calibration set never uses as the slice <code>{}</code>, '
                     'with those terms listed: see <a href="{}">{}</a> (one report per candidate, '
                     '<code>reports/verify-&lt;target&gt;.html</code>).</p>'.format(
                         e(VERIFY_SLICE), e(VERIFY_REPORT), e(VERIFY_REPORT)))
        term_table("Top terms", self.top_terms(), "Terms of the gated kinds by texts in the calibration set "
                   "(at most {}).".format(TOP_TERMS))
        return page("trtbuild calibration coverage", parts)


# ---------------------------------------------------------------------------------------------
# Building the report

def _check_args(calibration_texts, lexicon, buckets, eval_texts, min_slang_coverage, kinds):
    if isinstance(kinds, str):
        kinds = (kinds,)
    kinds = tuple(OrderedDict.fromkeys(kinds))
    if not kinds:
        raise TrtbuildError("coverage needs at least one lexicon kind to gate on (one of {})".format(
            ", ".join(LEXICON_KINDS)))
    unknown = [k for k in kinds if k not in LEXICON_KINDS]
    if unknown:
        raise TrtbuildError("unknown lexicon kind(s) {}; known: {}".format(", ".join(unknown), ", ".join(LEXICON_KINDS)))
    try:
        buckets = tuple(sorted(set(int(b) for b in buckets)))
    except (TypeError, ValueError):
        raise TrtbuildError("buckets must be positive integers (got {!r})".format(buckets)) from None
    if not buckets or buckets[0] < 1:
        raise TrtbuildError("buckets must be positive integers (got {!r})".format(buckets))
    if min_slang_coverage is not None:
        min_slang_coverage = float(min_slang_coverage)
        if not 0.0 <= min_slang_coverage <= 1.0:
            raise TrtbuildError("min_slang_coverage must be a share between 0 and 1 (got {:g}; 60% is 0.6)".format(
                min_slang_coverage))
    if isinstance(lexicon, (str, os.PathLike)):
        lexicon = load_lexicon(lexicon)
    lexicon = list(lexicon)
    if not any(entry.kind in kinds for entry in lexicon):
        raise TrtbuildError("the lexicon has no {} terms; coverage needs a lexicon with {}".format(
            "/".join(kinds), " or ".join(kinds)))
    calibration_texts = [str(t) for t in calibration_texts]
    if not calibration_texts:
        raise TrtbuildError("the calibration set holds no texts")
    if eval_texts is not None:
        eval_texts = [str(t) for t in eval_texts]
        if not eval_texts:
            raise TrtbuildError("the eval set holds no texts; pass eval_texts=None to measure against the lexicon")
    return calibration_texts, lexicon, buckets, eval_texts, min_slang_coverage, kinds


def _group_terms(lexicon):
    # type: (List[LexiconEntry]) -> Tuple[List[str], List[str], List[Tuple[str, ...]]]
    """One term per (kind, normalized spelling): the term shown, its kind, its other spellings."""
    index = OrderedDict()  # type: OrderedDict[Tuple[str, str], List[str]]
    for entry in lexicon:
        index.setdefault((entry.kind, normalize_term(entry.term)), []).append(entry.term)
    terms, kinds, variants = [], [], []
    for (kind, norm), spellings in index.items():
        shown = norm if norm in spellings else spellings[0]  # "yyds" rather than "YYDS" when both are listed
        terms.append(shown)
        kinds.append(kind)
        variants.append(tuple(s for s in spellings if s != shown))
    return terms, kinds, variants


def _count_hits(matcher, texts, n_terms, gated):
    """Texts hit per term, and the texts with >= 1 hit of a gated term."""
    counts = [0] * n_terms
    term_texts = 0
    for text in texts:
        found = matcher.find(text)
        for i in found:
            counts[i] += 1
        if any(gated[i] for i in found):
            term_texts += 1
    return counts, term_texts


def _special_count(tokenizer):
    try:
        return int(tokenizer.num_special_tokens_to_add(pair=False))
    except (AttributeError, TypeError, NotImplementedError):
        return len(tokenizer([""], add_special_tokens=True)["input_ids"][0])


_WHITESPACE = re.compile(r"\s+")


def _corpus_stats(name, texts, tokenizer, buckets, term_texts):
    n_special = _special_count(tokenizer)
    unk_id = getattr(tokenizer, "unk_token_id", None)
    histogram = OrderedDict((str(b), 0) for b in buckets)
    histogram["over"] = 0
    tokens = unk = truncated = max_length = 0
    unk_strings = {}  # type: Dict[str, int]
    offsets_ok = True
    for start in range(0, len(texts), TOKENIZER_BATCH):
        batch = texts[start:start + TOKENIZER_BATCH]
        enc = None
        if offsets_ok and unk_id is not None:
            try:
                enc = tokenizer(batch, add_special_tokens=False, truncation=False, return_offsets_mapping=True)
            except (NotImplementedError, TypeError, ValueError):
                offsets_ok = False  # slow tokenizers have no offsets: rates only, no UNK strings
        if enc is None:
            enc = tokenizer(batch, add_special_tokens=False, truncation=False)
        all_ids = enc["input_ids"]
        all_offsets = enc["offset_mapping"] if offsets_ok and unk_id is not None else [None] * len(all_ids)
        for text, ids, offsets in zip(batch, all_ids, all_offsets):
            tokens += len(ids)
            if unk_id is not None:
                for j, tid in enumerate(ids):
                    if tid == unk_id:
                        unk += 1
                        if offsets is not None:
                            s = text[offsets[j][0]:offsets[j][1]]
                            unk_strings[s] = unk_strings.get(s, 0) + 1
            length = len(ids) + n_special
            max_length = max(max_length, length)
            for b in buckets:
                if length <= b:
                    histogram[str(b)] += 1
                    break
            else:
                histogram["over"] += 1
                truncated += 1
    characters = sum(len(_WHITESPACE.sub("", t)) for t in texts)
    emoji_counts = [count_emoji(t) for t in texts]
    unk_top = sorted(unk_strings.items(), key=lambda kv: (-kv[1], kv[0]))[:UNK_TOP]
    return CorpusStats(name=name, texts=len(texts), characters=characters, tokens=tokens,
                       unk_tokens=unk if unk_id is not None else None, truncated=truncated, histogram=histogram,
                       emoji_texts=sum(1 for n in emoji_counts if n), emoji=sum(emoji_counts),
                       term_texts=term_texts, max_length=max_length, unk_top=unk_top)


def coverage_report(calibration_texts, lexicon, tokenizer, buckets=DEFAULT_BUCKETS, eval_texts=None,
                    min_slang_coverage=None, kinds=("slang",), suspect=None, lexicon_source=None):
    # type: (Iterable[str], Iterable[LexiconEntry], object, Sequence[int], Optional[Iterable[str]], Optional[float], Sequence[str]) -> CoverageReport
    """Measure how well `calibration_texts` cover the lexicon terms of `kinds` and what the tokenizer makes of
    them (and of `eval_texts`, the production-like set, when given).

    lexicon: LexiconEntry list (or a lexicon TSV path). tokenizer: a Hugging Face (fast) tokenizer.
    min_slang_coverage: the gate, a share in [0, 1]; None for no gate. Raises TrtbuildError on bad input.
    lexicon_source: where the lexicon came from, for the report ("packaged" or a path: trtbuild.data.lexicon_source);
    found from `lexicon` when it is a path. eval_texts=None: coverage of the whole lexicon, calibration stats only.
    """
    if lexicon_source is None and isinstance(lexicon, (str, os.PathLike)):
        lexicon_source = _lexicon_source(lexicon)
    calibration_texts, lexicon, buckets, eval_texts, min_slang_coverage, kinds = _check_args(
        calibration_texts, lexicon, buckets, eval_texts, min_slang_coverage, kinds)
    terms, term_kinds, variants = _group_terms(lexicon)
    gated = [k in kinds for k in term_kinds]
    matcher = TermMatcher(terms)
    cal_hits, cal_term_texts = _count_hits(matcher, calibration_texts, len(terms), gated)
    ev_hits, ev_term_texts = (_count_hits(matcher, eval_texts, len(terms), gated) if eval_texts is not None
                              else (None, 0))
    hits = [TermHits(term=terms[i], kind=term_kinds[i], calibration=cal_hits[i],
                     eval=None if ev_hits is None else ev_hits[i], variants=variants[i]) for i in range(len(terms))]

    lexicon_cov = OrderedDict()  # type: OrderedDict[str, KindCoverage]
    for kind in [k for k in LEXICON_KINDS if k in term_kinds] + sorted(set(term_kinds) - set(LEXICON_KINDS)):
        of_kind = [(i, t) for i, t in enumerate(hits) if t.kind == kind]
        in_eval = None if ev_hits is None else [t for _, t in of_kind if t.eval]
        top = sorted((it for it in of_kind if it[1].calibration), key=lambda it: (-it[1].calibration, it[0]))[:10]
        lexicon_cov[kind] = KindCoverage(
            kind=kind, terms=len(of_kind), calibration_covered=sum(1 for _, t in of_kind if t.calibration),
            eval_present=None if in_eval is None else len(in_eval),
            eval_present_covered=None if in_eval is None else sum(1 for t in in_eval if t.calibration),
            top=[t for _, t in top])

    selected = [(i, t) for i, t in enumerate(hits) if gated[i]]
    relevant = [(i, t) for i, t in selected if eval_texts is None or t.eval]
    missing = [(i, t) for i, t in relevant if not t.calibration]
    missing.sort(key=lambda it: (-(it[1].eval or 0), it[0]))

    calibration = _corpus_stats("calibration", calibration_texts, tokenizer, buckets, cal_term_texts)
    evaluation = (_corpus_stats("eval", eval_texts, tokenizer, buckets, ev_term_texts) if eval_texts is not None
                  else None)
    return CoverageReport(
        kinds=kinds, buckets=buckets, min_slang_coverage=min_slang_coverage,
        basis="lexicon" if eval_texts is None else "eval", relevant_terms=len(relevant),
        covered_terms=len(relevant) - len(missing), terms=[t for _, t in selected],
        missing_terms=[t for _, t in missing], lexicon=lexicon_cov, calibration=calibration, eval=evaluation,
        suspect={k: v for k, v in (suspect or {}).items() if v}, lexicon_source=lexicon_source)


def write_coverage(report, directory, stem=None):
    # type: (CoverageReport, str, Optional[str]) -> Tuple[str, str]
    """Write `coverage.json` and `coverage.html` (or `<stem>.json/.html`) into `directory`, each atomically."""
    directory = os.fspath(directory)
    json_path = os.path.join(directory, stem + ".json" if stem else COVERAGE_JSON)
    html_path = os.path.join(directory, stem + ".html" if stem else COVERAGE_HTML)
    atomic_write_json(json_path, report.to_dict())
    atomic_write_text(html_path, report.to_html())
    return json_path, html_path
