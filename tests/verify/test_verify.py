"""`trtbuild verify` on a real tiny model that was trained a little (so its predictions depend on the text):
metrics by hand, slices, the gate and its exit codes, reports, the cache the GPU side reads, bad inputs,
and the fallback of `trtbuild calibrate`."""

import json
import os
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import DATA, ROOT  # noqa: E402,F401

from trtbuild.calibrate import calibrate
from trtbuild.calibrate.fallback import calibrate_and_check
from trtbuild.calibrate.qdq import qdq_from_scales
from trtbuild.cli import cli
from trtbuild.config import CalibrateConfig, DataConfig, ExportConfig, VerifyConfig, default_config, with_overrides
from trtbuild.data import read_jsonl
from trtbuild.errors import TrtbuildError
from trtbuild.export import export_onnx
from trtbuild.verify.evalset import prepare_eval
from trtbuild.verify.metrics import drift_metrics

SLANG_CAL = os.path.join(DATA, "slang", "calibration.jsonl")
SLANG_EVAL = os.path.join(DATA, "slang", "eval.jsonl")
REVIEW_CAL = os.path.join(DATA, "reviews", "calibration.jsonl")
LEXICON = os.path.join(DATA, "lexicon", "slang_lexicon.tsv")


def make_config(workdir, calibrate_options=None, **verify_options):
    data = DataConfig(buckets=(16, 32, 64), calibration=(SLANG_CAL,), eval=(SLANG_EVAL,), lexicon=LEXICON)
    config = with_overrides(default_config("zh"), workdir=workdir).replace(data=data)
    options = dict({"method": "percentile", "percentile": 99.99}, **(calibrate_options or {}))
    config = config.replace(calibrate=CalibrateConfig(**options))
    return config.replace(verify=VerifyConfig(**verify_options))


@pytest.fixture(scope="module")
def trained_export(tmp_path_factory):
    """A 2-layer Chinese-vocab BERT trained for 3 epochs on 530 labelled texts, exported and calibrated."""
    from trtbuild.demo.random_bert import chinese_vocab_path, finetune_checkpoint, random_bert_checkpoint, read_vocab

    base = tmp_path_factory.mktemp("verify")
    ckpt = random_bert_checkpoint(str(base / "ckpt"), read_vocab(chinese_vocab_path()), hidden=64, heads=4,
                                  intermediate=128, max_positions=256, seed=2)
    rows = read_jsonl(SLANG_CAL) + read_jsonl(REVIEW_CAL)[:200]
    finetune_checkpoint(ckpt, [r["text"] for r in rows], [r["label"] for r in rows], epochs=3)
    work = str(base / "work")
    config = with_overrides(make_config(work), checkpoint=ckpt).replace(export=ExportConfig(max_length=64))
    export_onnx(config)
    calibrate(config, show_bar=False)
    return work


@pytest.fixture
def work(trained_export, tmp_path):
    """A private copy of the trained export (tests write reports and caches into it)."""
    dst = str(tmp_path / "work")
    shutil.copytree(trained_export, dst)
    return dst


def write_yaml(tmp_path, work, extra=""):
    path = tmp_path / "model.yaml"
    path.write_text("""model: {{name: zh, workdir: {w}}}
export: {{max_length: 64}}
data:
  buckets: [16, 32, 64]
  calibration: [{cal}]
  eval: [{ev}]
  lexicon: {lex}
calibrate: {{method: percentile, percentile: 99.99}}
{extra}""".format(w=work, cal=SLANG_CAL, ev=SLANG_EVAL, lex=LEXICON, extra=extra), encoding="utf-8")
    return str(path)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def broken_candidate(work, tmp_path, factor):
    """The Q/DQ model rebuilt from scales.json with every activation amax multiplied by `factor`."""
    other = str(tmp_path / "broken")
    shutil.copytree(work, other)
    path = os.path.join(other, "scales.json")
    scales = json.load(open(path, encoding="utf-8"))
    for info in scales["activations"].values():
        info["amax"] *= factor
    with open(path, "w", encoding="utf-8") as f:
        json.dump(scales, f)
    return qdq_from_scales(other).qdq_onnx


# ---------------------------------------------------------------------------------------------
# Metrics

def test_drift_metrics_match_a_hand_computation():
    y = np.array([0, 0, 1, 1, 1])
    base = np.eye(2)[[0, 0, 1, 1, 0]] * 3.0  # 4 of 5 right
    cand = np.eye(2)[[0, 1, 1, 1, 0]] * 3.0  # one flip, now wrong
    m = drift_metrics(y, base, cand, bootstrap=2000, seed=1)
    assert m["baseline"]["accuracy"] == pytest.approx(0.8) and m["candidate"]["accuracy"] == pytest.approx(0.6)
    # baseline: F1(0) = 2*2/(4+1+0) = 0.8, F1(1) = 2*2/(4+0+1) = 0.8; candidate: F1(0) = 2/4, F1(1) = 4/6
    assert m["baseline"]["macro_f1"] == pytest.approx(0.8)
    assert m["candidate"]["macro_f1"] == pytest.approx((0.5 + 4 / 6) / 2)
    assert m["macro_f1_drop_pt"] == pytest.approx(100 * (0.8 - (0.5 + 4 / 6) / 2))
    assert m["accuracy_drop_pt"] == pytest.approx(20.0)
    assert m["flips"] == 1 and m["flip_rate"] == pytest.approx(0.2)
    assert m["logit_max_abs_diff"] == pytest.approx(3.0)
    p = np.exp([3.0, 0.0]) / np.exp([3.0, 0.0]).sum()
    assert m["mean_kl"] == pytest.approx((p * np.log(p / p[::-1])).sum() / 5)
    lo, hi = m["accuracy_drop_ci95"]
    assert lo <= 20.0 <= hi and lo >= 0.0  # a paired bootstrap: the flip only ever hurts
    same = drift_metrics(y, base, base, bootstrap=100)
    assert same["macro_f1_drop_pt"] == 0 and same["macro_f1_drop_ci95"] == [0.0, 0.0] and same["mean_kl"] == 0


# ---------------------------------------------------------------------------------------------
# The gate, the reports, the exit codes

def test_fp32_candidate_passes_with_zero_drift_and_writes_reports(work, tmp_path):
    result = invoke("verify", work, "-c", write_yaml(tmp_path, work), "--candidate", "fp32")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("fp32: PASS | macro-F1")
    report = json.load(open(os.path.join(work, "reports", "verify-fp32.json"), encoding="utf-8"))
    assert report["passed"] and report["exit_code"] == 0 and report["texts"] == 330
    assert report["slices"]["all"]["flips"] == 0 and report["slices"]["all"]["logit_max_abs_diff"] == 0
    assert set(report["slices"]) >= {"all", "set:slang/eval.jsonl", "text:slang", "label:negative", "label:positive",
                                     "length:<=32"}
    assert report["slices"]["label:negative"]["texts"] == report["slices"]["label:positive"]["texts"] == 165
    # every slang post uses a lexicon term, so there is no plain-text slice here (empty slices are left out)
    assert report["slices"]["text:slang"]["texts"] == 330 and "text:plain" not in report["slices"]
    assert sum(m["texts"] for n, m in report["slices"].items() if n.startswith("length:")) == 330


def test_broken_candidate_fails_the_gate_with_exit_4(work, tmp_path):
    broken = broken_candidate(work, tmp_path, 100.0)
    result = invoke("verify", work, "-c", write_yaml(tmp_path, work), "--candidate", broken)
    assert result.exit_code == 4, result.output
    assert result.stdout.split(":")[0] == "model-qdq"  # another file than the workdir's own Q/DQ: named by its stem
    assert "FAIL |" in result.stdout and "FAILED: overall flip rate" in result.stdout
    target = result.stdout.split(":")[0]
    base = os.path.join(work, "reports", "verify-" + target)
    report = json.load(open(base + ".json", encoding="utf-8"))
    assert not report["passed"] and report["exit_code"] == 4
    assert report["slices"]["all"]["flip_rate"] > 0.01 and report["slices"]["all"]["macro_f1_drop_pt"] > 0.8
    worst = report["worst_slices"][0]
    assert worst["examples"] and worst["examples"][0]["baseline"] != worst["examples"][0]["candidate"]
    suite = ET.parse(base + ".xml").getroot()
    cases = suite.findall("testcase")
    gates = [c for c in cases if c.get("name").startswith("gate: ")]
    slices = [c for c in cases if c.get("name").startswith("slice: ")]
    assert len(gates) == 2 and len(slices) == len(report["slices"]) - 1
    failed = sum(1 for g in report["gates"] if not g["passed"])
    assert int(suite.get("failures")) == failed == len([c for c in cases if c.find("failure") is not None])
    html = open(base + ".html", encoding="utf-8").read()
    assert "data:image/png;base64," in html and "FAIL" in html


def test_qdq_is_the_default_candidate_and_gate_limits_come_from_options(work, tmp_path):
    config = write_yaml(tmp_path, work, "verify: {max_flip_rate: 0.0, max_f1_drop: 0.0}\n")
    result = invoke("verify", "-c", config, "--json")
    reports = json.loads(result.stdout)
    assert [r["target"] for r in reports] == ["qdq"]
    assert reports[0]["limits"]["max_flip_rate"] == 0.0
    assert result.exit_code == (0 if reports[0]["passed"] else 4)
    loose = invoke("verify", "-c", config, "--candidate", broken_candidate(work, tmp_path, 100.0),
                   "--max-flip-rate", "1", "--max-f1-drop", "100", "--max-slice-f1-drop", "100")
    assert loose.exit_code == 0, loose.output


# ---------------------------------------------------------------------------------------------
# The cache: the GPU side runs no tokenizer and no baseline

def test_the_cache_serves_a_machine_without_a_tokenizer(work, monkeypatch):
    config = make_config(work)
    first = prepare_eval(config)
    assert os.path.basename(first.path).startswith("verify-") and os.path.isfile(first.path)

    def no_tokenizer(workdir):
        raise ImportError("no transformers here")

    monkeypatch.setattr("trtbuild.workdir.WorkDir.load_tokenizer", no_tokenizer)
    monkeypatch.setattr("trtbuild.backends.ort.OrtRunner.__init__", lambda *a, **k: pytest.fail("the baseline re-ran"))
    again = prepare_eval(config)
    assert again.path == first.path and np.array_equal(again.baseline, first.baseline)
    assert [f[1].tolist() for f in again.batches] == [f[1].tolist() for f in first.batches]
    os.remove(first.path)
    with pytest.raises(TrtbuildError, match="run `trtbuild verify` once where transformers is installed"):
        prepare_eval(config)


def test_a_changed_eval_file_gets_a_new_cache_entry(work, tmp_path):
    first = prepare_eval(make_config(work))
    copy = tmp_path / "eval.jsonl"
    rows = read_jsonl(SLANG_EVAL)[:40]
    copy.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    second = prepare_eval(make_config(work), eval_paths=[str(copy)])
    assert second.path != first.path and len(second) == 40
    assert np.allclose(second.baseline, first.baseline[:40], atol=1e-5)  # the same texts, the same logits


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 1 (3 without TensorRT for an engine)

def write_rows(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("rows, message", [
    ([{"text": "蚌埠住了😂"}], "has no label column 'label'; verify needs a label per text (one of negative, positive"),
    ([{"text": "蚌埠住了😂", "label": "positive"}, {"text": "破防了"}], "has 1 text(s) without a label"),
    ([{"text": "蚌埠住了😂", "label": "happy"}], "label(s) 'happy' are not labels of this model (negative, positive"),
])
def test_bad_eval_files(work, tmp_path, rows, message):
    path = write_rows(tmp_path / "bad.jsonl", rows)
    result = invoke("verify", work, "-c", write_yaml(tmp_path, work), "--eval", path)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert message in result.stderr


def test_integer_labels_are_model_ids(work, tmp_path):
    rows = [{"text": r["text"], "label": 0 if r["label"] == "negative" else 1} for r in read_jsonl(SLANG_EVAL)]
    path = write_rows(tmp_path / "ids.jsonl", rows)
    result = invoke("verify", work, "-c", write_yaml(tmp_path, work), "--eval", path, "--candidate", "fp32")
    assert result.exit_code == 0, result.output


def test_bad_candidates(work, tmp_path, tiny_checkpoint_no_token_types):
    config = write_yaml(tmp_path, work)
    other = str(tmp_path / "other")
    export_onnx(with_overrides(default_config("o"), checkpoint=tiny_checkpoint_no_token_types, workdir=other))
    cases = [
        ("nope.onnx", 1, "candidate nope.onnx not found; pass an .onnx or .engine path, or one of qdq, fp8, fp16, int8, fp32"),
        (os.path.join(other, "model.onnx"), 1, "takes inputs attention_mask, input_ids, the baseline model takes "
                                               "attention_mask, input_ids, token_type_ids"),
        ("int8", 1, "no int8 engine under {}; run `trtbuild build {} --int8` on the GPU machine".format(
            os.path.join(work, "engines"), work)),
    ]
    text = tmp_path / "notes.onnx"
    text.write_text("not a model", encoding="utf-8")
    cases.append((str(text), 1, "ONNX Runtime cannot load it"))
    engine = tmp_path / "fp16.engine"
    engine.write_bytes(b"\0" * 64)
    cases.append((str(engine), 3, "TensorRT"))
    for candidate, code, message in cases:
        result = invoke("verify", work, "-c", config, "--candidate", candidate)
        assert result.exit_code == code, (candidate, result.output)
        # progress lines may come first (the baseline is made once); the error itself is one line, last
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and message in errors[0], result.stderr
        assert result.stderr.strip().splitlines()[-1] == errors[0]


# ---------------------------------------------------------------------------------------------
# calibrate's fallback: decided on held-out calibration texts, judged by verify on the eval set

def test_fallback_keeps_sensitive_tensors_in_float_until_the_held_out_target(work):
    # percentile 60 clips nearly every activation: the held-out texts flip, and only float tensors bring them back
    config = make_config(work, {"auto_fallback": True, "fallback_max_layers": 14, "fallback_target": 0.02,
                                "quantize_residual": True, "percentile": 51.0, "equalize": False, "holdout": 0.5})
    result = calibrate_and_check(config, show_bar=False)
    fb = result.fallback
    assert fb is not None and fb["passed"], (fb, result.held_out, result.equalized)
    assert fb["start"]["flip_rate"] > 0.02 and fb["final"]["flip_rate"] <= 0.02
    assert fb["final"] == result.held_out
    assert 1 <= len(fb["float_tensors"]) == sum(s["kept"] for s in fb["steps"]) <= 14
    ranked = [r["tensor"] for r in fb["ranking"]]
    assert [t for t in ranked if t in fb["float_tensors"]] == fb["float_tensors"]  # most sensitive first
    assert all(r["kl_gain"] > 0 for r in fb["ranking"])
    assert set(fb["per_class"]) >= {"qkv", "ffn_in", "ffn_out"}  # only-this-class runs point at the cause
    assert 0 < fb["gemm_flops_float_share"] < 1
    scales = json.load(open(result.scales, encoding="utf-8"))
    assert set(fb["float_nodes"]) <= set(scales["excluded_nodes"]) and scales["fallback"]["passed"]
    assert scales["held_out"]["texts"] == fb["final"]["texts"] > 0
    before = open(result.qdq_onnx, "rb").read()
    qdq_from_scales(work)  # the GPU side rebuilds exactly this model from scales.json
    assert open(result.qdq_onnx, "rb").read() == before


def test_fallback_that_runs_out_of_budget_says_so_and_the_gate_exits_4(work, tmp_path):
    config = write_yaml(tmp_path, work, "verify: {max_flip_rate: 0.0, max_f1_drop: 0.0, max_slice_f1_drop: 0.0}\n")
    config_text = open(config, encoding="utf-8").read().replace(
        "calibrate: {method: percentile, percentile: 99.99}",
        "calibrate: {method: percentile, percentile: 51.0, fallback_max_layers: 1, fallback_target: 0.01, "
        "quantize_residual: true, equalize: false, holdout: 0.5}")
    with open(config, "w", encoding="utf-8") as f:
        f.write(config_text)
    result = invoke("calibrate", "-c", config)
    assert result.exit_code == 4, result.output
    assert "fallback: 1 tensor(s) kept in float" in result.stdout
    assert "and the held-out target 1.00% is still missed (budget 1)" in result.stdout
