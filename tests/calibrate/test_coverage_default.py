"""Coverage by default: the slang lexicon shipped with trtbuild, and a coverage report without an eval set."""

import filecmp
import json
import os

import pytest
from helpers import DATA  # noqa: E402

from trtbuild.calibrate.coverage import VERIFY_SLICE, coverage_report
from trtbuild.data import (
    DEFAULT_LEXICON, LEXICON_KINDS, PACKAGED_LEXICON, LexiconEntry, lexicon_source, load_lexicon, resolve_lexicon
)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="module")
def tok():
    from transformers import BertTokenizerFast

    vocab = SPECIALS + ["a", "b", "##a", "hello", "好", "的", "了", "真"]
    return BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)


def test_resolve_lexicon_defaults_to_the_packaged_file():
    assert resolve_lexicon(None) == resolve_lexicon("") == DEFAULT_LEXICON
    assert os.path.isfile(DEFAULT_LEXICON)
    assert os.path.dirname(DEFAULT_LEXICON) == os.path.join(os.path.dirname(os.path.abspath(
        __import__("trtbuild").__file__)), "resources")
    entries = load_lexicon(resolve_lexicon(None))
    assert len(entries) > 1000 and {e.kind for e in entries} == set(LEXICON_KINDS)
    # the packaged copy is the repository's lexicon (calibration_data/README.md gives its provenance)
    assert filecmp.cmp(DEFAULT_LEXICON, os.path.join(DATA, "lexicon", "slang_lexicon.tsv"), shallow=False)
    assert resolve_lexicon("my/lexicon.tsv") == "my/lexicon.tsv"  # a configured path wins, checked by its reader


def test_lexicon_source_names_packaged_or_the_path():
    assert lexicon_source(None) == lexicon_source(DEFAULT_LEXICON) == PACKAGED_LEXICON == "packaged"
    assert lexicon_source("my/lexicon.tsv") == "my/lexicon.tsv"


def test_coverage_without_eval_texts_still_measures_the_tokenizer(tok):
    lexicon = [LexiconEntry("真的", "slang", "test"), LexiconEntry("绝绝子", "slang", "test"),
               LexiconEntry("😭", "emoji", "test")]
    # lengths with [CLS]/[SEP]: 3, 4 (好 + x = [UNK]), 7, 35 (over the largest bucket, 32)
    texts = ["hello", "好x", "真的好了😭", "好" * 33]
    r = coverage_report(texts, lexicon, tok, buckets=(8, 32))
    assert r.eval is None and r.basis == "lexicon"
    assert (r.relevant_terms, r.covered_terms) == (2, 1)  # every slang term of the lexicon is relevant
    assert [t.term for t in r.missing_terms] == ["绝绝子"] and r.missing_terms[0].eval is None
    c = r.calibration
    assert c.texts == 4 and c.unk_tokens == 2  # "x" and the emoji
    assert c.unk_rate == pytest.approx(2 / c.tokens) and c.tokens_per_char == pytest.approx(c.tokens / c.characters)
    assert c.histogram == {"8": 3, "32": 0, "over": 1} and c.truncated == 1 and c.max_length == 35
    d = r.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert d["corpora"]["eval"] is None and d["corpora"]["calibration"]["unk_rate"] == pytest.approx(c.unk_rate)
    assert d["verify"]["slice"] == VERIFY_SLICE == "text:slang-unseen"
    page = r.to_html()
    assert "UNK rate" in page and "tokens per character" in page and "text:slang-unseen" in page
    assert any(line.startswith("UNK rate") for line in r.summary_lines())


def test_coverage_names_its_lexicon(tok):
    r = coverage_report(["真的"], DEFAULT_LEXICON, tok)  # a path: its source is found from it
    assert r.lexicon_source == "packaged" and r.to_dict()["lexicon_source"] == "packaged"
    assert "the one shipped with trtbuild" in r.to_html()
    given = coverage_report(["真的"], load_lexicon(DEFAULT_LEXICON), tok, lexicon_source="my/lexicon.tsv")
    assert given.to_dict()["lexicon_source"] == "my/lexicon.tsv" and "<code>my/lexicon.tsv</code>" in given.to_html()
    assert coverage_report(["真的"], load_lexicon(DEFAULT_LEXICON), tok).lexicon_source is None
