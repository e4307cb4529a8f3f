"""trtbuild.coverage: term matching, slang coverage and its gate, tokenizer / emoji stats, JSON and HTML."""

import json
import os
import random
import re
import time

import pytest
from helpers import DATA  # noqa: E402
from helpers import listing

import trtbuild.calibrate.coverage as cov
from trtbuild.calibrate.coverage import count_emoji, coverage_report, write_coverage
from trtbuild.data import LexiconEntry, TermMatcher, load_lexicon
from trtbuild.errors import TrtbuildError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_tokenizer(tokens):
    from transformers import BertTokenizerFast

    vocab = SPECIALS + list(tokens)
    return BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)


@pytest.fixture(scope="module")
def tok():
    """[UNK] is id 1; 'hello' is one token; CJK characters are split one per token; x, y, z are unknown."""
    return make_tokenizer(["a", "b", "c", "##a", "##b", "##c", "hello", "好", "的", "了", "真"])


def lex(*pairs):
    return [LexiconEntry(term, kind, "test") for term, kind in pairs]


def hits(matcher, text):
    return {matcher.keys[i] for i in matcher.find(text)}


# ---------------------------------------------------------------------------------------------
# Term matching

def test_ascii_terms_need_boundaries_and_ignore_case():
    m = TermMatcher(["nb", "6", "yyds", "2333", "蚌埠住了"])
    assert hits(m, "太nb了") == {"nb"}
    assert hits(m, "NB!") == {"nb"}
    assert hits(m, "看NBA直播") == set()
    assert hits(m, "nb6") == set()  # a digit is an ASCII neighbour too
    assert hits(m, "电话2666") == set()
    assert hits(m, "真6 6 6") == {"6"}
    assert hits(m, "YYDS永远滴神") == {"yyds"}
    assert hits(m, "ayyds") == set() and hits(m, "yyds1") == set()
    assert hits(m, "哈哈2333") == {"2333"} and hits(m, "23333") == set()
    assert hits(m, "我真的蚌埠住了哈哈") == {"蚌埠住了"}  # CJK: plain substring


def test_mixed_terms_overlaps_emoji_and_case_scope():
    m = TermMatcher(["emo了", "芭比Q", "芭比Q了", "❤️", "(╯‵□′)╯︵┻━┻", "(ﾟДﾟ)", "hhh", "hhhh"])
    assert hits(m, "我emo了") == {"emo了"}
    assert hits(m, "demo了") == set()  # its ASCII edge needs a boundary as well
    assert hits(m, "芭比q了家人们") == {"芭比Q", "芭比Q了"}  # overlapping terms both hit
    assert hits(m, "爱你❤") == {"❤️"} and hits(m, "爱你❤️") == {"❤️"}  # variation selector ignored
    assert hits(m, "气死(╯‵□′)╯︵┻━┻") == {"(╯‵□′)╯︵┻━┻"}
    assert hits(m, "(ﾟдﾟ)") == set()  # only ASCII letters are case-folded
    assert hits(m, "hhhh") == {"hhhh"}  # "hhh" inside "hhhh" touches another letter
    assert hits(m, "hhh哈hhhh") == {"hhh", "hhhh"}


def _brute_force(terms, text):
    found = set()
    low = text.lower()
    for i, term in enumerate(terms):
        t = term.lower()
        for m in re.finditer("(?={})".format(re.escape(t)), low):
            s, e = m.start(), m.start() + len(t)
            if t[0].isascii() and t[0].isalnum() and s > 0 and low[s - 1].isascii() and low[s - 1].isalnum():
                continue
            if t[-1].isascii() and t[-1].isalnum() and e < len(low) and low[e].isascii() and low[e].isalnum():
                continue
            found.add(i)
            break
    return found


def test_matcher_agrees_with_brute_force_on_random_text():
    rng = random.Random(7)
    alphabet = "aAb1好了哈 "
    terms = sorted({"".join(rng.choice(alphabet.strip()) for _ in range(rng.randint(1, 4))) for _ in range(60)})
    m = TermMatcher(terms)
    for _ in range(400):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert m.find(text) == _brute_force(terms, text), text


# ---------------------------------------------------------------------------------------------
# Coverage and the gate

LEXICON = lex(("蚌埠住了", "slang"), ("yyds", "slang"), ("绝绝子", "slang"), ("破防", "slang"), ("躺平", "slang"),
              ("😭", "emoji"), ("(╥﹏╥)", "kaomoji"))
CAL = ["蚌埠住了", "绝绝子真的", "躺平了", "好的😭"]
EVAL = ["yyds", "YYDS!", "真yyds", "破防了", "蚌埠住了", "绝绝子", "(╥﹏╥)"]


def test_coverage_is_relative_to_the_eval_set(tok):
    r = coverage_report(CAL, LEXICON, tok, eval_texts=EVAL)
    assert r.basis == "eval"
    assert (r.relevant_terms, r.covered_terms) == (4, 2)  # 躺平 is not used in eval: not relevant
    assert r.slang_coverage == pytest.approx(0.5)
    assert [(t.term, t.eval) for t in r.missing_terms] == [("yyds", 3), ("破防", 1)]  # most eval hits first
    by_term = {t.term: t for t in r.terms}
    assert set(by_term) == {"蚌埠住了", "yyds", "绝绝子", "破防", "躺平"}  # only the gated kind
    assert (by_term["蚌埠住了"].calibration, by_term["蚌埠住了"].eval) == (1, 1)
    assert (by_term["躺平"].calibration, by_term["躺平"].eval) == (1, 0)
    # emoji and kaomoji are counted, but separately by kind
    assert (r.lexicon["emoji"].terms, r.lexicon["emoji"].calibration_covered, r.lexicon["emoji"].eval_present) == (1, 1, 0)
    assert (r.lexicon["kaomoji"].calibration_covered, r.lexicon["kaomoji"].eval_present) == (0, 1)
    assert (r.lexicon["slang"].terms, r.lexicon["slang"].calibration_covered) == (5, 3)
    assert r.calibration.term_texts == 3 and r.eval.term_texts == 6
    assert [t.term for t in r.top_terms()] == ["蚌埠住了", "绝绝子", "躺平"]


def test_without_eval_every_term_of_the_kinds_is_relevant(tok):
    r = coverage_report(CAL, LEXICON, tok)
    assert r.basis == "lexicon" and r.eval is None
    assert (r.relevant_terms, r.covered_terms) == (5, 3)
    assert [t.term for t in r.missing_terms] == ["yyds", "破防"]  # lexicon order
    r2 = coverage_report(CAL, LEXICON, tok, kinds=("slang", "kaomoji"), eval_texts=EVAL)
    assert (r2.relevant_terms, r2.covered_terms) == (5, 2)
    assert [t.term for t in r2.missing_terms] == ["yyds", "破防", "(╥﹏╥)"]
    assert "slang/kaomoji" in coverage_report(CAL, LEXICON, tok, kinds=("slang", "kaomoji"),
                                              min_slang_coverage=1.0).failure_message()


def test_case_variants_count_once(tok):
    r = coverage_report(["yyds"], lex(("YYDS", "slang"), ("yyds", "slang"), ("nb", "slang")), tok,
                        eval_texts=["太NB了", "看NBA"])
    assert [(t.term, t.variants, t.calibration) for t in r.terms] == [("yyds", ("YYDS",), 1), ("nb", (), 0)]
    assert [(t.term, t.eval) for t in r.missing_terms] == [("nb", 1)]


def test_gate_pass_fail_and_message(tok):
    failed = coverage_report(CAL, LEXICON, tok, eval_texts=EVAL, min_slang_coverage=0.6)
    assert not failed.passed and not failed
    assert failed.failure_message() == ("calibration set covers 50% of the slang in the eval set "
                                        "(2 of 4 terms; gate 60%); missing: yyds (3), 破防 (1)")
    passed = coverage_report(CAL, LEXICON, tok, eval_texts=EVAL, min_slang_coverage=0.5)
    assert passed.passed and passed and passed.failure_message() == ""
    ungated = coverage_report(CAL, LEXICON, tok, eval_texts=EVAL)
    assert ungated.passed and bool(ungated)
    # an eval set without any slang: nothing to cover, so the gate cannot fail
    nothing = coverage_report(CAL, LEXICON, tok, eval_texts=["好的"], min_slang_coverage=0.9)
    assert nothing.slang_coverage is None and nothing.passed


def test_failure_message_lists_at_most_20_terms_and_never_rounds_up_to_the_gate(tok):
    terms = ["词{:02d}".format(i) for i in range(25)]
    eval_texts = [t for i, t in enumerate(terms) for _ in range(25 - i)]  # 词00 x25, 词01 x24, ...
    r = coverage_report(["好"], lex(*[(t, "slang") for t in terms]), tok, eval_texts=eval_texts,
                        min_slang_coverage=0.6)
    msg = r.failure_message()
    assert "\n" not in msg
    assert msg.startswith("calibration set covers 0% of the slang in the eval set (0 of 25 terms; gate 60%)")
    assert "词00 (25), 词01 (24)," in msg and "词19 (6), ... (and 5 more)" in msg and "词20" not in msg
    two_of_three = coverage_report(["甲", "乙"], lex(("甲", "slang"), ("乙", "slang"), ("丙", "slang")), tok,
                                   min_slang_coverage=0.67)
    assert not two_of_three
    assert two_of_three.failure_message().startswith(
        "calibration set covers 66% of the slang in the lexicon (2 of 3 terms; gate 67%); missing: 丙")


def test_bad_arguments_are_one_line_errors(tok):
    with pytest.raises(TrtbuildError, match="unknown lexicon kind"):
        coverage_report(CAL, LEXICON, tok, kinds=("memes",))
    with pytest.raises(TrtbuildError, match="between 0 and 1"):
        coverage_report(CAL, LEXICON, tok, min_slang_coverage=60)
    with pytest.raises(TrtbuildError, match="no texts"):
        coverage_report([], LEXICON, tok)
    with pytest.raises(TrtbuildError, match="no jargon terms"):
        coverage_report(CAL, LEXICON, tok, kinds="jargon")


# ---------------------------------------------------------------------------------------------
# Tokenizer and emoji statistics

def test_unk_rate_and_tokens_per_char(tok):
    # hello: 1 token / 5 chars; 好 的: 2 tokens / 2 chars (whitespace not counted); 好x: 好 + [UNK]
    r = coverage_report(["hello", "好 的", "好x"], lex(("绝绝子", "slang")), tok, eval_texts=["xyz好", "好"])
    c = r.calibration
    assert (c.texts, c.characters, c.tokens, c.unk_tokens) == (3, 9, 5, 1)
    assert c.unk_rate == pytest.approx(1 / 5)
    assert c.tokens_per_char == pytest.approx(5 / 9)
    assert c.unk_top == [("x", 1)]
    e = r.eval
    assert (e.tokens, e.unk_tokens, e.characters) == (3, 1, 5)  # "xyz" is one unknown word: one [UNK]
    assert e.unk_rate == pytest.approx(1 / 3)
    assert e.unk_top == [("xyz", 1)]


def test_bucket_histogram_and_truncation(tok):
    texts = ["好" * n for n in (1, 2, 3, 6, 7)]  # lengths with [CLS] and [SEP]: 3, 4, 5, 8, 9
    r = coverage_report(texts, lex(("绝绝子", "slang")), tok, buckets=(8, 4))
    c = r.calibration
    assert r.buckets == (4, 8)
    assert c.histogram == {"4": 2, "8": 2, "over": 1}
    assert list(c.histogram) == ["4", "8", "over"]
    assert (c.truncated, c.truncated_share, c.max_length) == (1, pytest.approx(0.2), 9)


@pytest.mark.parametrize("library", [True, False], ids=["emoji-package", "unicode-fallback"])
def test_emoji_share(tok, monkeypatch, library):
    if library:
        pytest.importorskip("emoji")
    else:
        monkeypatch.setattr(cov, "_emoji_lib", None)
    assert count_emoji("好😂😂") == 2
    assert count_emoji("👍🏻") == 1 and count_emoji("👨‍👩‍👧") == 1 and count_emoji("🇨🇳") == 1
    assert count_emoji("好的，(╯‵□′)") == 0
    # chars (no whitespace): 3 + 2 + 3 + 2 = 10; emoji: 2 + 0 + 1 + 0
    r = coverage_report(["好😂😂", "好的", "👍🏻 好", "好的"], lex(("绝绝子", "slang")), tok)
    c = r.calibration
    assert (c.emoji_texts, c.emoji, c.characters) == (2, 3, 10)
    assert c.emoji_text_share == pytest.approx(0.5)
    assert c.emoji_per_1k_chars == pytest.approx(300.0)


# ---------------------------------------------------------------------------------------------
# Output

def test_to_dict_round_trips_through_json(tok):
    r = coverage_report(CAL, LEXICON, tok, eval_texts=EVAL, min_slang_coverage=0.6)
    d = r.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert d["gate"]["passed"] is False and d["gate"]["min_slang_coverage"] == 0.6
    assert d["gate"]["slang_coverage"] == pytest.approx(0.5)
    assert d["gate"]["message"] == r.failure_message()
    assert [t["term"] for t in d["top_terms"]] == ["蚌埠住了", "绝绝子", "躺平"]
    assert [(t["term"], t["eval_hits"]) for t in d["missing_terms"]] == [("yyds", 3), ("破防", 1)]
    assert d["corpora"]["eval"]["length_histogram"] == {"32": 7, "64": 0, "128": 0, "256": 0, "over": 0}
    assert set(d["lexicon"]) == {"slang", "emoji", "kaomoji"}
    no_eval = coverage_report(CAL, LEXICON, tok).to_dict()
    assert json.loads(json.dumps(no_eval, allow_nan=False)) == no_eval and no_eval["corpora"]["eval"] is None


def test_summary_lines_are_compact(tok):
    r = coverage_report(CAL, LEXICON, tok, eval_texts=EVAL, min_slang_coverage=0.6)
    lines = r.summary_lines()
    assert 8 <= len(lines) <= 12
    assert lines[0].endswith("FAILED") and "50%" in lines[0]
    assert any(line.startswith("UNK rate") for line in lines)
    assert lines[-1].startswith("missing: yyds (3)")


def test_html_escapes_and_files_are_written_atomically(tok, tmp_path):
    lexicon = LEXICON + lex(("<b>", "slang"), ("a&b", "slang"))
    r = coverage_report(CAL, lexicon, tok, eval_texts=EVAL + ["看<b>这个", "a&b"], min_slang_coverage=0.6)
    assert [t.term for t in r.missing_terms][:2] == ["yyds", "破防"] and "<b>" in [t.term for t in r.missing_terms]
    page = r.to_html()
    assert page.startswith("<!DOCTYPE html>")
    assert "&lt;b&gt;" in page and "<b>" not in page and "a&amp;b" in page
    assert "gate FAILED" in page and "<script" not in page and "http" not in page
    out = tmp_path / "out" / "model"
    json_path, html_path = write_coverage(r, str(out))
    assert (json_path, html_path) == (str(out / "coverage.json"), str(out / "coverage.html"))
    assert listing(str(out)) == ["coverage.html", "coverage.json"]  # no temp files left behind
    with open(json_path, encoding="utf-8") as f:
        assert json.load(f) == json.loads(json.dumps(r.to_dict()))
    with open(html_path, encoding="utf-8") as f:
        assert f.read() == page
    write_coverage(coverage_report(CAL, LEXICON, tok), str(out))  # overwrites in place
    assert listing(str(out)) == ["coverage.html", "coverage.json"]


# ---------------------------------------------------------------------------------------------
# The real calibration data

def _texts(*parts):
    out = []
    for part in parts:
        with open(os.path.join(DATA, part), encoding="utf-8") as f:
            out.extend(json.loads(line)["text"] for line in f if line.strip())
    return out


def test_real_calibration_data(capsys):
    from transformers import BertTokenizerFast

    from trtbuild.demo.random_bert import chinese_vocab_path, read_vocab

    vocab = read_vocab(chinese_vocab_path())  # 21,128 tokens, [UNK] at 100
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    lexicon = load_lexicon(os.path.join(DATA, "lexicon", "slang_lexicon.tsv"))
    cal = _texts("reviews/calibration.jsonl", "slang/calibration.jsonl")
    ev = _texts("reviews/eval.jsonl", "slang/eval.jsonl")
    start = time.perf_counter()
    r = coverage_report(cal, lexicon, tokenizer, eval_texts=ev, min_slang_coverage=0.6)
    seconds = time.perf_counter() - start
    assert 0.0 < r.slang_coverage < 1.0
    by_term = {t.term: t for t in r.terms}
    # the seeded split put all five 蚌埠住了 posts into calibration: used there, irrelevant to the eval gate
    assert (by_term["蚌埠住了"].calibration, by_term["蚌埠住了"].eval) == (5, 0)
    assert by_term["yyds"].calibration > 0 and by_term["yyds"].eval > 0 and by_term["yyds"].variants == ("YYDS",)
    assert by_term["破防"].calibration > 0 and by_term["破防"].eval > 0
    assert "蚌埠住了" not in {t.term for t in r.missing_terms}
    assert by_term["栓Q"].calibration == 0 and by_term["栓Q"] in r.missing_terms
    assert not r.passed and r.failure_message().startswith("calibration set covers ")
    assert r.calibration.texts == len(cal) == 1330 and r.eval.texts == len(ev) == 1330
    assert 0.0 < r.calibration.unk_rate < 0.05 and 0.5 < r.calibration.tokens_per_char < 1.5
    assert sum(r.eval.histogram.values()) == r.eval.texts
    assert 0.0 < r.eval.emoji_text_share < 0.2
    assert r.lexicon["kaomoji"].terms > 0 and r.lexicon["emoji"].calibration_covered > 0
    # every lexicon term a slang post says it uses is found in that post
    terms = {e.term for e in lexicon}
    matcher = TermMatcher(sorted(terms))
    for part in ("slang/calibration.jsonl", "slang/eval.jsonl"):
        with open(os.path.join(DATA, part), encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                found = {matcher.keys[i] for i in matcher.find(row["text"])}
                assert set(row["terms"]) & terms <= found, row
    json.dumps(r.to_dict(), allow_nan=False)
    with capsys.disabled():
        print("\ncoverage_report on calibration_data: {:.2f} s".format(seconds))
        print("\n".join(r.summary_lines()))
