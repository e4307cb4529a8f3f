"""Equalization (SmoothQuant) on a real post-LN BERT: exact in FP32, recorded in scales.json, reproduced by
--from-scales, never touching a LayerNorm that feeds a residual Add."""

import json
import os
import shutil

import numpy as np
import pytest
from helpers import DATA

from trtbuild.calibrate import calibrate
from trtbuild.calibrate.equalize import apply_equalization, equalizations_from_scales, factors_for, search_alpha
from trtbuild.calibrate.holdout import agreement, split_holdout
from trtbuild.calibrate.qdq import qdq_from_scales
from trtbuild.config import CalibrateConfig, DataConfig, ExportConfig, default_config, with_overrides
from trtbuild.errors import TrtbuildError
from trtbuild.export import export_onnx

SLANG_CAL = os.path.join(DATA, "slang", "calibration.jsonl")


@pytest.fixture(scope="module")
def calibrated(chinese_checkpoint, tmp_path_factory):
    work = str(tmp_path_factory.mktemp("eq") / "work")
    config = with_overrides(default_config("zh"), checkpoint=chinese_checkpoint, workdir=work)
    config = config.replace(export=ExportConfig(max_length=64),
                            data=DataConfig(buckets=(16, 32, 64), calibration=(SLANG_CAL,)))
    export_onnx(config)
    result = calibrate(config.replace(calibrate=CalibrateConfig(method="percentile", percentile=99.99)), show_bar=False)
    return config, work, result


def _logits(model, feeds):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def test_equalization_is_exact_in_fp32_on_a_post_ln_bert(calibrated):
    import onnx

    _, work, result = calibrated
    scales = json.load(open(result.scales, encoding="utf-8"))
    eqs = equalizations_from_scales(scales)
    modes = {e.klass: e.mode for e in eqs}
    assert result.equalized == len(eqs) == 2 * 4  # 2 layers x (QKV, attention output, FFN-in, FFN-out)
    assert modes == {"qkv": "mul", "attn_out": "fold", "ffn_in": "mul", "ffn_out": "mul"}
    assert all(np.all(np.asarray(e.factors) > 0) for e in eqs)
    model = onnx.load(os.path.join(work, "model.onnx"))
    eq_model = apply_equalization(model, eqs)
    # the LayerNorms (each also feeds a residual Add) keep their gamma and beta: 1/s sits on the GEMM branch only
    before = {i.name: i for i in model.graph.initializer}
    after = {i.name: i for i in eq_model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "LayerNormalization":
            for name in node.input[1:]:
                if name in before:  # (an exporter may feed an Identity of a shared initializer instead)
                    assert after[name].raw_data == before[name].raw_data
    rng = np.random.default_rng(0)
    for batch, seq in ((1, 16), (5, 64)):
        ids = rng.integers(1000, 21128, size=(batch, seq)).astype(np.int64)
        mask = np.ones_like(ids)
        mask[:, seq // 2:] = rng.integers(0, 2, size=(batch, seq - seq // 2))
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        ref, got = _logits(model, feeds), _logits(eq_model, feeds)
        assert np.abs(ref - got).max() < 1e-4


def test_from_scales_rebuilds_the_equalized_qdq_model_byte_for_byte(calibrated, tmp_path):
    _, work, result = calibrated
    copy = str(tmp_path / "copy")
    shutil.copytree(work, copy)
    before = open(os.path.join(copy, "model.qdq.onnx"), "rb").read()
    qdq_from_scales(copy)
    assert open(os.path.join(copy, "model.qdq.onnx"), "rb").read() == before
    # a record whose factors are not usable is refused in one line, before anything is written
    path = os.path.join(copy, "scales.json")
    scales = json.load(open(path, encoding="utf-8"))
    scales["equalization"]["tensors"][0]["factors"][0] = -1.0
    with open(path, "w", encoding="utf-8") as f:
        json.dump(scales, f)
    with pytest.raises(TrtbuildError):
        qdq_from_scales(copy)


def test_the_search_picks_an_alpha_that_tames_an_outlier_channel():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(512, 64)).astype(np.float32)
    x[:, 7] *= 60.0  # one channel ~60x the rest, as in the default model's GELU outputs
    w = rng.normal(size=(64, 32)).astype(np.float32) * 0.05
    act_max, w_max = np.abs(x).max(0), np.abs(w).max(1)
    best, errors = search_alpha(x, [w], act_max, w_max, (0.5, 0.75, 0.9))
    assert best is not None and errors[best] < 0.25 * errors["off"]
    s = factors_for(act_max, w_max, best)
    assert s[7] == s.max() and np.allclose((x / s) @ (w * s[:, None]), x @ w, atol=1e-3)


def test_holdout_split_and_agreement():
    texts = ["t{}".format(i) for i in range(200)]
    a, b = split_holdout(texts, 0.2, 0)
    assert len(b) == 40 and len(a) == 160 and not set(a) & set(b) and split_holdout(texts, 0.2, 0) == (a, b)
    assert split_holdout(texts[:100], 0.2, 0) == (texts[:100], [])  # too few to hold any out
    base = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]], dtype=np.float32)
    cand = np.array([[1.0, 0.0], [1.0, 0.0], [2.0, 0.1]], dtype=np.float32)
    got = agreement(base, cand)
    assert got["flips"] == 1 and got["texts"] == 3 and got["mean_kl"] > 0 and got["logit_mse"] > 0
