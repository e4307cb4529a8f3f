"""The `text:slang-unseen` slice: eval texts with a lexicon term the calibration corpus never uses; the packaged
lexicon when the config names none; the slice and its terms in the cache, subsets and the reports. Tiny data:
a hand-made EvalSet, and one tiny random BERT export (no training)."""

import json
import os
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from trtbuild.config import CalibrateConfig, DataConfig, ExportConfig, VerifyConfig, default_config, with_overrides
from trtbuild.data import LexiconEntry, load_lexicon, resolve_lexicon
from trtbuild.export import export_onnx
from trtbuild.verify import VerifyResult
from trtbuild.verify.evalset import EvalSet, prepare_eval, slang_tags
from trtbuild.verify.report import evaluate

EVAL = [("yyds 好", "positive"), ("蚌埠住了", "negative"), ("绝绝子，封神", "positive"), ("今天下雨了", "negative"),
        ("破防了", "negative"), ("封神", "positive")]
CAL = ["YYDS真的", "我破防了", "普通的一天"]  # yyds (any case) and 破防 are seen; 蚌埠住了, 绝绝子, 封神 are not
SLANG = [True, True, True, False, True, True]
UNSEEN = [False, True, True, False, False, True]


def lex(*terms):
    return [LexiconEntry(t, "slang", "test") for t in terms]


def test_slang_tags_mark_texts_with_terms_the_calibration_never_uses():
    lexicon = lex("YYDS", "yyds", "蚌埠住了", "绝绝子", "封神", "破防", "躺平") + [LexiconEntry("😭", "emoji", "test")]
    texts = [t for t, _ in EVAL] + ["哭了😭"]
    slang, unseen, terms = slang_tags(texts, lexicon, CAL)
    assert slang.tolist() == SLANG + [True] and unseen.tolist() == UNSEEN + [True]
    # lexicon order; "YYDS"/"yyds" are one term; 躺平 is unseen but no eval text uses it
    assert terms == [("蚌埠住了", "slang"), ("绝绝子", "slang"), ("封神", "slang"), ("😭", "emoji")]
    only_slang, no_unseen, no_terms = slang_tags(texts, lexicon)  # no calibration corpus: no slice
    assert only_slang.tolist() == slang.tolist() and no_unseen is None and no_terms == []
    _, all_seen, none = slang_tags(texts, lexicon, texts)
    assert not all_seen.any() and none == []


def hand_made(unseen=True):
    """An EvalSet of EVAL without a model: baseline logits right on every text; no batches (evaluate needs none)."""
    texts = [t for t, _ in EVAL]
    labels = np.array([0 if y == "negative" else 1 for _, y in EVAL], dtype=np.int64)
    slang, slang_unseen, terms = slang_tags(texts, load_lexicon(resolve_lexicon(None)), CAL if unseen else None)
    return EvalSet(texts=texts, labels=labels, label_names=["negative", "positive"], sources=["ev.jsonl"] * len(texts),
                   slang=slang, lengths=np.full(len(texts), 8, dtype=np.int64),
                   buckets=np.full(len(texts), 16, dtype=np.int64), batches=[], input_names=["input_ids"],
                   baseline=np.eye(2, dtype=np.float32)[labels] * 4, key="k", path="p", slang_unseen=slang_unseen,
                   unseen_terms=terms, lexicon="packaged")


def test_slices_subset_and_terms():
    ev = hand_made()
    s = ev.slices()
    assert list(s)[:4] == ["all", "set:ev.jsonl", "text:slang", "text:slang-unseen"] and "text:plain" in s
    assert s["text:slang"].tolist() == SLANG and s["text:slang-unseen"].tolist() == UNSEEN
    assert ev.slang_unseen_terms() == [{"term": "封神", "kind": "slang", "texts": 2},
                                       {"term": "绝绝子", "kind": "slang", "texts": 1},
                                       {"term": "蚌埠住了", "kind": "slang", "texts": 1}]
    assert [t["term"] for t in ev.slang_unseen_terms(top=1)] == ["封神"]
    sub = ev.subset([0, 2, 3])
    assert sub.slices()["text:slang-unseen"].tolist() == [False, True, False] and sub.lexicon == "packaged"
    assert sub.slang_unseen_terms() == [{"term": "封神", "kind": "slang", "texts": 1},
                                        {"term": "绝绝子", "kind": "slang", "texts": 1}]  # counted on the subset
    none_unseen = ev.subset([0, 3, 4])
    assert "text:slang-unseen" not in none_unseen.slices() and none_unseen.slang_unseen_terms() == []
    assert "text:slang-unseen" not in hand_made(unseen=False).slices()


def test_the_slice_and_its_terms_reach_json_junit_and_html(tmp_path):
    ev = hand_made()
    cand = ev.baseline.copy()
    cand[1] = cand[1][::-1]  # one unseen-slang text flips
    report = evaluate(ev, cand, VerifyConfig(min_slice_texts=2, bootstrap=50), "t", "cand.onnx", "OrtRunner", "m.onnx")
    paths = report.write(str(tmp_path))
    d = json.load(open(paths["json"], encoding="utf-8"))
    assert d["slices"]["text:slang-unseen"]["texts"] == 3 and d["slices"]["text:slang-unseen"]["flips"] == 1
    assert d["lexicon"] == "packaged" and [t["term"] for t in d["slang_unseen_terms"]] == ["封神", "绝绝子", "蚌埠住了"]
    assert any(g["slice"] == "text:slang-unseen" for g in d["gates"])
    names = [c.get("name") for c in ET.parse(paths["junit"]).getroot().findall("testcase")]
    assert "slice: text:slang-unseen" in names
    html = open(paths["html"], encoding="utf-8").read()
    assert "Slang the calibration never saw" in html and "<td>text:slang-unseen</td>" in html
    assert "<td>绝绝子</td><td>slang</td>" in html and "the lexicon shipped with trtbuild" in html
    assert "  slang unseen in calibration: 封神 (2), 绝绝子 (1), 蚌埠住了 (1)" in VerifyResult([report]).summary()


# ---------------------------------------------------------------------------------------------
# prepare_eval: the packaged lexicon by default, the calibration corpus in the cache key

def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory, tiny_checkpoint):
    work = str(tmp_path_factory.mktemp("unseen") / "work")
    config = with_overrides(default_config("tiny"), checkpoint=tiny_checkpoint, workdir=work)
    export_onnx(config.replace(export=ExportConfig(max_length=32), data=DataConfig(buckets=(16, 32))))
    return work


@pytest.fixture
def setup(tiny_export, tmp_path):
    work = str(tmp_path / "work")
    shutil.copytree(tiny_export, work)
    ev = write_jsonl(tmp_path / "eval.jsonl", [{"text": t, "label": y} for t, y in EVAL])
    cal = write_jsonl(tmp_path / "cal.jsonl", [{"text": t} for t in CAL])

    def config(calibration=(cal,), **calibrate):
        data = DataConfig(buckets=(16, 32), calibration=tuple(calibration), eval=(ev,), lexicon=None)
        return with_overrides(default_config("tiny"), workdir=work).replace(
            data=data, calibrate=CalibrateConfig(**calibrate))

    return config, tmp_path / "cal.jsonl"


def test_prepare_eval_uses_the_packaged_lexicon_and_the_calibration_corpus(setup):
    config, cal = setup
    notes = []
    ev = prepare_eval(config(), progress=notes.append)
    assert ev.lexicon == "packaged"  # data.lexicon is None: the lexicon shipped with trtbuild
    assert ev.slang.tolist() == SLANG and ev.slang_unseen.tolist() == UNSEEN
    assert [t for t, _ in ev.unseen_terms] == ["封神", "绝绝子", "蚌埠住了"]
    again = prepare_eval(config(), progress=notes.append)  # from the cache: the slice and its terms kept
    assert again.path == ev.path and any("from the cache" in n for n in notes)
    assert again.slang_unseen.tolist() == UNSEEN and again.unseen_terms == ev.unseen_terms
    assert again.lexicon == "packaged" and again.slang_unseen_terms()[0] == {"term": "封神", "kind": "slang", "texts": 2}

    # a changed calibration corpus is another cache entry, with its own slice
    cal.write_text(cal.read_text(encoding="utf-8") + json.dumps({"text": "封神之作"}, ensure_ascii=False) + "\n",
                   encoding="utf-8")
    changed = prepare_eval(config())
    assert changed.path != ev.path and changed.slang_unseen.tolist() == [False, True, True, False, False, False]
    assert [t for t, _ in changed.unseen_terms] == ["绝绝子", "蚌埠住了"]
    sampled = prepare_eval(config(max_texts=1, sample_seed=3))  # calibrate's sample is what it saw
    assert sampled.path not in (ev.path, changed.path)
    assert sampled.slang_unseen.sum() >= changed.slang_unseen.sum()


def test_without_a_calibration_corpus_there_is_no_unseen_slice(setup, tmp_path):
    config, _ = setup
    notes = []
    ev = prepare_eval(config(calibration=()), progress=notes.append)
    assert ev.slang.tolist() == SLANG and ev.slang_unseen is None and ev.unseen_terms == []
    assert "text:slang" in ev.slices() and "text:slang-unseen" not in ev.slices()
    assert any("no data.calibration" in n for n in notes)
    missing = prepare_eval(config(calibration=(str(tmp_path / "gone.jsonl"),)), progress=notes.append)
    assert missing.slang_unseen is None and any("gone.jsonl not found" in n for n in notes)
    assert os.path.isfile(missing.path) and missing.path != ev.path
