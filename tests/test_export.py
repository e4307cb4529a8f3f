"""Real exports of tiny random BERTs, checked against PyTorch with ONNX Runtime."""

import json
import os

import numpy as np
import pytest
from helpers import listing

from trtbuild.config import DataConfig, ExportConfig, default_config, with_overrides
from trtbuild.errors import ParityError
from trtbuild.export import export_onnx, sample_inputs
from trtbuild.workdir import check_export, sha256_file


def export(checkpoint, workdir, **export_options):
    config = with_overrides(default_config("m"), checkpoint=checkpoint, workdir=workdir)
    if export_options:
        top = export_options.get("max_length") or 128
        config = config.replace(export=ExportConfig(**export_options),
                                data=DataConfig(buckets=tuple(b for b in (16, 32, 64, 128) if b <= top)))
    return export_onnx(config)


def torch_and_ort(checkpoint, onnx_path, feeds):
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, local_files_only=True).eval()
    with torch.no_grad():
        ref = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    got = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"]).run(["logits"], feeds)[0]
    return ref, got


def onnx_io(path):
    import onnx

    model = onnx.load(path)
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    return model, dims, [o.name for o in model.graph.output]


def test_export_with_token_type_ids(tiny_checkpoint, workdir):
    result = export(tiny_checkpoint, workdir)
    assert result
    assert result.inputs == ["input_ids", "attention_mask", "token_type_ids"]
    model, dims, outputs = onnx_io(result.onnx)
    assert dims == {n: ["batch", "sequence"] for n in result.inputs}
    assert outputs == ["logits"]
    assert model.opset_import[0].version == 17
    # every required shape was checked: batch 1 and 7, a short and the max sequence
    assert {(c.batch, c.sequence) for c in result.checks} == {(1, 8), (1, 128), (7, 8), (7, 128)}
    assert result.max_abs_diff < 1e-4
    assert sorted(os.listdir(workdir)) == ["export.json", "labels.json", "model.onnx", "tokenizer"]


def test_exported_onnx_matches_torch_on_an_unseen_shape(tiny_checkpoint, workdir):
    from transformers import AutoTokenizer

    result = export(tiny_checkpoint, workdir)
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(workdir, "tokenizer"), local_files_only=True)
    feeds = sample_inputs(tokenizer, 300, result.inputs, batch=3, sequence=37, seed=5)
    ref, got = torch_and_ort(tiny_checkpoint, result.onnx, feeds)
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_export_without_token_type_ids(tiny_checkpoint_no_token_types, workdir):
    result = export(tiny_checkpoint_no_token_types, workdir)
    assert result.inputs == ["input_ids", "attention_mask"]
    _, dims, _ = onnx_io(result.onnx)
    assert list(dims) == ["input_ids", "attention_mask"]
    assert result.labels == ["negative", "neutral", "positive"]
    labels = json.load(open(os.path.join(workdir, "labels.json"), encoding="utf-8"))
    assert labels["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}


def test_export_chinese_vocab_on_real_text(chinese_checkpoint, workdir):
    from transformers import AutoTokenizer

    result = export(chinese_checkpoint, workdir)
    assert result.max_length == 256
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(workdir, "tokenizer"), local_files_only=True)
    texts = ["蚌埠住了，这也太好笑了吧", "物流很快，质量一般般", "yyds！绝绝子"]
    enc = tokenizer(texts, padding=True, return_tensors="np")
    ids = enc["input_ids"]
    assert (ids == tokenizer.unk_token_id).sum() == 0  # the Chinese vocab covers these characters
    assert tokenizer.convert_ids_to_tokens(ids[0][1:5].tolist()) == ["蚌", "埠", "住", "了"]
    feeds = {k: enc[k].astype(np.int64) for k in result.inputs}
    ref, got = torch_and_ort(chinese_checkpoint, result.onnx, feeds)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_export_json_records_versions_hashes_and_parity(tiny_checkpoint, workdir):
    result = export(tiny_checkpoint, workdir)
    record = check_export(workdir)
    assert record["opset"] == 17 and record["max_length"] == 128 and record["output"] == "logits"
    assert record["inputs"] == result.inputs
    assert record["input_axes"]["input_ids"] == ["batch", "sequence"]
    assert set(record["versions"]) >= {"trtbuild", "torch", "transformers", "onnx", "onnxruntime"}
    assert record["sha256"]["onnx"] == sha256_file(result.onnx)
    assert record["sha256"]["weights/model.safetensors"] == sha256_file(os.path.join(tiny_checkpoint, "model.safetensors"))
    assert [c["max_abs_diff"] for c in record["checks"]] == [c.max_abs_diff for c in result.checks]


def test_configured_max_length_and_batches(tiny_checkpoint, workdir):
    result = export(tiny_checkpoint, workdir, max_length=64, validate_batches=(2,), short_length=5)
    assert {(c.batch, c.sequence) for c in result.checks} == {(2, 5), (2, 64)}
    assert result.max_length == 64


def test_parity_failure_writes_nothing(tiny_checkpoint, workdir):
    with pytest.raises(ParityError) as info:
        export(tiny_checkpoint, workdir, tolerance=1e-30)
    assert len(info.value.checks) == 4
    assert "beyond tolerance 1e-30" in str(info.value)
    assert listing(workdir) == []


def test_interrupted_export_leaves_no_half_onnx(tiny_checkpoint, workdir, monkeypatch):
    import trtbuild.export as ex

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ex, "validate_parity", killed)  # after the ONNX is written to its temp name
    with pytest.raises(KeyboardInterrupt):
        export(tiny_checkpoint, workdir)
    assert listing(workdir) == []


def test_reexport_replaces_files_atomically(tiny_checkpoint, tiny_checkpoint_no_token_types, workdir):
    export(tiny_checkpoint, workdir)
    config = with_overrides(default_config("m"), checkpoint=tiny_checkpoint_no_token_types, workdir=workdir)
    result = export_onnx(config, force=True)
    assert result.inputs == ["input_ids", "attention_mask"]
    assert listing(workdir) == sorted(["export.json", "labels.json", "model.onnx", "tokenizer/",
                                       "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json"])


def test_additive_mask_export_matches_the_model_and_drops_the_mask_construction(tiny_checkpoint, tmp_path):
    # issue 9: the [batch, 1, 1, seq] additive mask instead of transformers' [batch, 1, seq, seq] And/Expand/Where
    import onnx

    plain = export(tiny_checkpoint, str(tmp_path / "plain"))
    additive = export(tiny_checkpoint, str(tmp_path / "additive"), mask="additive")
    ops = lambda r: {n.op_type for n in onnx.load(r.onnx).graph.node}  # noqa: E731
    assert {"Where", "Expand"} <= ops(plain) and not {"Where", "Expand", "And"} & ops(additive)
    rng = np.random.default_rng(5)
    mask = np.ones((3, 12), dtype=np.int64)
    mask[1, 7:] = 0
    mask[2, 3:] = 0  # padded rows: the mask matters
    feeds = {"input_ids": rng.integers(5, 300, size=(3, 12)).astype(np.int64), "attention_mask": mask,
             "token_type_ids": np.zeros((3, 12), dtype=np.int64)}
    ref, got = torch_and_ort(tiny_checkpoint, additive.onnx, feeds)
    assert np.abs(ref - got).max() < 1e-4
