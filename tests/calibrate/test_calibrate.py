"""`trtbuild calibrate` on real tiny exports: statistics, scales, Q/DQ graph, coverage gate, CLI."""

import hashlib
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import DATA, ROOT  # noqa: E402,F401

from trtbuild.calibrate import calibrate
from trtbuild.calibrate.fallback import calibrate_and_check
from trtbuild.calibrate.qdq import plan_qdq, trt_calibration_cache
from trtbuild.cli import cli
from trtbuild.config import CalibrateConfig, DataConfig, ExportConfig, default_config, with_overrides
from trtbuild.errors import TrtbuildError
from trtbuild.export import export_onnx

SLANG_CAL = os.path.join(DATA, "slang", "calibration.jsonl")
SLANG_EVAL = os.path.join(DATA, "slang", "eval.jsonl")
LEXICON = os.path.join(DATA, "lexicon", "slang_lexicon.tsv")


@pytest.fixture(scope="module")
def zh_export(chinese_checkpoint, tmp_path_factory):
    """The tiny Chinese-vocab BERT, exported once for the module (max length 64)."""
    work = str(tmp_path_factory.mktemp("zh") / "work")
    config = with_overrides(default_config("zh"), checkpoint=chinese_checkpoint, workdir=work)
    config = config.replace(export=ExportConfig(max_length=64), data=DataConfig(buckets=(16, 32, 64)))
    export_onnx(config)
    return work


def make_config(workdir, **calibrate_options):
    data = DataConfig(buckets=(16, 32, 64), calibration=(SLANG_CAL,), eval=(SLANG_EVAL,), lexicon=LEXICON)
    config = with_overrides(default_config("zh"), workdir=workdir).replace(data=data)
    return config.replace(calibrate=CalibrateConfig(**calibrate_options))


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def fresh_copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return str(dst)


def test_the_plugins_full_int8_recipe_finds_every_range_it_needs_in_a_real_placement(zh_export):
    """build.int8_scope full reads, per layer, 8 ranges out of scales.json by the ONNX nodes consuming each tensor:
    the names of a real export with quantize_attention + quantize_residual must give every one of them."""
    import onnx

    from trtbuild.backends.trt.plugins import PluginBackendError, layer_ranges

    model = onnx.load(os.path.join(zh_export, "model.onnx"))
    plan = plan_qdq(model, quantize_residual=True, quantize_attention=True)
    scales = {"activations": {t: {"amax": 1.0 + k, "consumers": [n for n, _ in uses]}
                              for k, (t, uses) in enumerate(sorted(plan.activations.items()))}}
    ranges = layer_ranges(scales, 2)
    for r in ranges:
        assert set(r) == {"input", "qkv", "probs", "probs_max", "context", "ffn_input", "gelu", "attn_dense", "ffn_dense",
                          "residual"}
        assert all(v is not None for v in r.values()) and all(v is not None for v in r["residual"].values()), r
    dense = {t: a["amax"] for t, a in scales["activations"].items() if t.endswith("dense/Add_output_0")}
    assert ranges[1]["attn_dense"] == dense[[t for t in dense if "layer.1/attention/output/dense" in t][0]]
    assert ranges[1]["ffn_dense"] == dense[[t for t in dense if "layer.1/output/dense" in t][0]]
    plain = {"activations": {t: {"amax": 1.0, "consumers": [n for n, _ in uses]}
                             for t, uses in plan_qdq(model, quantize_attention=True).activations.items()}}
    assert all(r["attn_dense"] is None and r["qkv"] for r in layer_ranges(plain, 2))
    with pytest.raises(PluginBackendError, match="equalization"):
        layer_ranges(dict(scales, equalization={"tensors": [{"tensor": "x"}]}), 2)


def test_placement_quantizes_linear_layers_and_residuals_only(zh_export):
    import onnx

    model = onnx.load(os.path.join(zh_export, "model.onnx"))
    assert not any(n.startswith("/") and n.endswith("/Add") for n in plan_qdq(model).quantized_nodes)  # default
    plan = plan_qdq(model, quantize_residual=True)
    ops = {n.name: n.op_type for n in model.graph.node}
    quantized = {ops[n] for n in plan.quantized_nodes}
    assert quantized == {"MatMul", "Gemm", "Add"}
    matmuls = [n for n in plan.quantized_nodes if ops[n] == "MatMul"]
    assert len(matmuls) == 2 * 6  # per layer: query, key, value, attention output, FFN in, FFN out
    assert not any(n.endswith("attention/self/MatMul") or n.endswith("attention/self/MatMul_1") for n in matmuls)
    assert len([n for n in plan.quantized_nodes if ops[n] == "Add"]) == 2 * 2  # two residual Adds per layer
    assert len([n for n in plan.quantized_nodes if ops[n] == "Gemm"]) == 2  # pooler, classifier
    assert all(axis == 1 for name, (axis, _) in plan.weights.items() if "MatMul" in name)
    excluded = plan_qdq(model, exclude=["*/layer.1/*"])
    assert excluded.excluded_nodes and all("/layer.1/" in n for n in excluded.excluded_nodes)
    assert not any("/layer.1/" in n for n in excluded.quantized_nodes)


def test_calibrate_writes_a_qdq_model_that_runs_and_stays_close(zh_export, tmp_path):
    import onnx
    import onnxruntime as ort

    work = fresh_copy(zh_export, tmp_path / "w")
    result = calibrate_and_check(make_config(work), show_bar=False)
    assert sorted(os.listdir(work)) == ["cache", "calibrate.json", "coverage.html", "coverage.json", "export.json",
                                        "labels.json", "model.onnx", "model.qdq.onnx", "reports", "scales.json",
                                        "sensitivity.html", "sensitivity.json", "tokenizer"]
    record = json.load(open(os.path.join(work, "calibrate.json"), encoding="utf-8"))
    assert set(record["outputs"]) == {"model.qdq.onnx", "scales.json", "coverage.json", "coverage.html",
                                      "sensitivity.json", "sensitivity.html"}
    sens = json.load(open(os.path.join(work, "sensitivity.json"), encoding="utf-8"))
    assert set(sens["per_class"]) >= {"qkv", "attn_out", "ffn_in", "ffn_out", "attention"}
    assert len(sens["equalized"]) == result.equalized == 8 and sens["gemm_flops_int8_share"] == 1.0
    assert all(t["outliers_after"]["ratio"] <= t["outliers_before"]["ratio"] * 1.0001 for t in sens["equalized"])
    assert record["inputs"]["onnx"] == json.load(open(os.path.join(work, "export.json")))["sha256"]["onnx"]
    assert sorted(os.listdir(os.path.join(work, "reports"))) == ["verify-qdq.html", "verify-qdq.json", "verify-qdq.xml"]
    qdq = onnx.load(result.qdq_onnx)
    ops = [n.op_type for n in qdq.graph.node]
    assert ops.count("QuantizeLinear") == ops.count("DequantizeLinear") == result.activations + result.weights
    for node in qdq.graph.node:  # LayerNorm and Softmax are never fed by a DequantizeLinear
        if node.op_type in ("LayerNormalization", "Softmax"):
            assert not any(i.endswith("_dequantized") for i in node.input)
    zero_points = [i for i in qdq.graph.initializer if i.name.endswith("_zero_point")]
    assert zero_points and all(i.data_type == onnx.TensorProto.INT8 for i in zero_points)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 21128, size=(4, 32)).astype(np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    ref = ort.InferenceSession(os.path.join(work, "model.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = ort.InferenceSession(result.qdq_onnx, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert np.abs(got - ref).max() < 0.1 * (np.abs(ref).max() + 1e-3) + 0.02
    assert result.accuracy["qdq"]["texts"] == 330
    scales = json.load(open(result.scales, encoding="utf-8"))
    assert scales["format"] == "trtbuild-scales/2" and scales["method"] == "entropy"
    assert scales["histogram"]["bins"] == 2048
    # 20 % of the 330 calibration texts are held out to judge the choices (equalization, fallback)
    assert scales["corpus"]["texts"] == 264 and scales["corpus"]["held_out"] == 66
    assert len(scales["corpus"]["sha256"]) == 64 and scales["held_out"]["texts"] == 66
    for info in scales["activations"].values():
        assert 0 < info["amax"] <= info["max_abs"] * 1.0001


def test_deterministic_and_independent_of_batch_size(zh_export, tmp_path):
    digests = []
    for i, batch in enumerate((16, 16, 3)):
        work = fresh_copy(zh_export, tmp_path / "w{}".format(i))
        calibrate(make_config(work, batch_size=batch), show_bar=False)
        digests.append((sha(os.path.join(work, "scales.json")), sha(os.path.join(work, "model.qdq.onnx"))))
        if i == 0:
            first = json.load(open(os.path.join(work, "scales.json"), encoding="utf-8"))
        elif digests[i] != digests[0]:
            other = json.load(open(os.path.join(work, "scales.json"), encoding="utf-8"))
            diff = [k for k in first if first[k] != other.get(k)]
            assert not diff, (i, diff, [(first[k], other.get(k)) for k in diff][:1])
    assert digests[0] == digests[1] == digests[2]


def test_methods_order(zh_export, tmp_path):
    amax = {}
    for method in ("entropy", "minmax", "percentile"):
        work = fresh_copy(zh_export, tmp_path / method)
        calibrate(make_config(work, method=method), show_bar=False)
        amax[method] = {k: v["amax"] for k, v in json.load(open(os.path.join(work, "scales.json")))["activations"].items()}
    for name, top in amax["minmax"].items():
        assert amax["entropy"][name] <= top * 1.0001
        assert amax["percentile"][name] <= top * 1.0001
    assert any(amax["entropy"][n] < 0.9 * amax["minmax"][n] for n in amax["minmax"])  # entropy clips outliers


def test_coverage_gate_fails_with_missing_terms_and_writes_no_model(zh_export, tmp_path):
    work = fresh_copy(zh_export, tmp_path / "w")
    corpus = tmp_path / "plain.txt"
    corpus.write_text("这家酒店的房间很干净\n物流很快，包装完好\n屏幕显示效果一般\n", encoding="utf-8")
    config = make_config(work, min_slang_coverage=0.6)
    with pytest.raises(TrtbuildError) as info:
        calibrate(config, corpus_paths=[str(corpus)], show_bar=False)
    message = str(info.value)
    assert message.startswith("calibration set covers 0% of the slang in the eval set (0 of ")
    assert "gate 60%); missing: " in message
    assert not os.path.exists(os.path.join(work, "model.qdq.onnx"))
    assert not os.path.exists(os.path.join(work, "coverage.html"))  # no coverage without the scales it describes
    assert "reports/coverage-rejected.html" in message  # the rejected corpus's report says what is missing
    assert os.path.exists(os.path.join(work, "reports", "coverage-rejected.html"))


def test_not_a_trtbuild_export(tmp_path):
    with pytest.raises(TrtbuildError) as info:
        calibrate(make_config(str(tmp_path)), show_bar=False)
    assert str(info.value) == ("{} holds no trtbuild export (model.onnx + export.json); run `trtbuild export "
                               "CHECKPOINT -o {}` first".format(tmp_path, tmp_path))


def test_edited_onnx_refused(zh_export, tmp_path):
    work = fresh_copy(zh_export, tmp_path / "w")
    with open(os.path.join(work, "model.onnx"), "ab") as f:
        f.write(b"\0")
    with pytest.raises(TrtbuildError, match="model.onnx does not match export.json"):
        calibrate(make_config(work), show_bar=False)


def test_trt_cache_header_per_tensorrt_version():
    from trtbuild.calibrate.qdq import trt_cache_header

    assert trt_cache_header("8.6.0") == "TRT-8600-EntropyCalibration2"
    assert trt_cache_header("8.6.1.6") == "TRT-8601-EntropyCalibration2"
    assert trt_cache_header("10.13.3.9") == "TRT-101303-EntropyCalibration2"


def test_trt_cache_format():
    text = trt_calibration_cache({"b": 127.0, "a": 1.27})
    assert text.splitlines() == ["TRT-8600-EntropyCalibration2", "a: 3c23d70a", "b: 3f800000"]


def test_cli_calibrate(zh_export, tmp_path):
    work = fresh_copy(zh_export, tmp_path / "w")
    corpus = tmp_path / "c.txt"
    corpus.write_text("蚌埠住了，笑死我了😂\nyyds！绝绝子\n今天又破防了\n躺平了家人们\n" * 3, encoding="utf-8")
    result = CliRunner().invoke(cli, ["calibrate", work, "--corpus", str(corpus), "--trt-cache", "--no-equalize", "--no-eval"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("calibrated 12 texts by entropy in ")
    assert os.path.exists(os.path.join(work, "calibration.cache"))
    bad = CliRunner().invoke(cli, ["calibrate", str(tmp_path / "nothing"), "--corpus", str(corpus)])
    assert bad.exit_code == 1
    assert bad.stderr.startswith("Error: ") and "holds no trtbuild export" in bad.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["calibrate", work, "--corpus", str(empty)])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == ("Error: corpus {} holds no texts; give a file with at least one "
                                              "non-empty text".format(empty))


def test_fp8_model_from_the_same_scales_runs_in_onnx_runtime_and_verify_checks_it(zh_export, tmp_path):
    """calibrate --precision fp8: model.fp8.onnx beside model.qdq.onnx, opset 19, FLOAT8E4M3FN zero points, scale
    amax / 448 per tensor (activations) and per channel (weights), the same placement; ONNX Runtime runs it on
    the CPU, verify measures it (`--candidate fp8`) and refuses it once edited; an INT8-only rebuild removes it."""
    import onnx
    import onnxruntime as ort

    work = fresh_copy(zh_export, tmp_path / "w")
    config = make_config(work, precision="fp8")
    calibrate(config, show_bar=False)
    fp8 = onnx.load(os.path.join(work, "model.fp8.onnx"))
    int8 = onnx.load(os.path.join(work, "model.qdq.onnx"))
    assert {o.domain: o.version for o in fp8.opset_import}[""] == 19
    assert [n.op_type for n in fp8.graph.node] == [n.op_type for n in int8.graph.node]  # the same placement
    zero = {i.name: i for i in fp8.graph.initializer if i.name.endswith("_zero_point")}
    assert zero and all(z.data_type == onnx.TensorProto.FLOAT8E4M3FN for z in zero.values())
    scales8 = {i.name: onnx.numpy_helper.to_array(i) for i in int8.graph.initializer if i.name.endswith("_scale")}
    scalesf = {i.name: onnx.numpy_helper.to_array(i) for i in fp8.graph.initializer if i.name.endswith("_scale")}
    assert scales8.keys() == scalesf.keys()
    for name in scales8:
        assert np.allclose(scalesf[name] * 448, scales8[name] * 127, rtol=1e-5), name
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 21128, size=(4, 32)).astype(np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    ref = ort.InferenceSession(os.path.join(work, "model.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = ort.InferenceSession(os.path.join(work, "model.fp8.onnx"),
                               providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert np.abs(got - ref).max() < 0.1 * (np.abs(ref).max() + 1e-3) + 0.02
    yaml = tmp_path / "c.yaml"
    yaml.write_text("model: {{name: zh, workdir: {}}}\ndata: {{eval: [{}]}}\n".format(work, SLANG_EVAL), encoding="utf-8")
    result = CliRunner().invoke(cli, ["verify", work, "-c", str(yaml), "--candidate", "fp8"])
    assert result.exit_code in (0, 4) and "fp8:" in result.output, result.output
    assert os.path.isfile(os.path.join(work, "reports", "verify-fp8.json"))
    with open(os.path.join(work, "model.fp8.onnx"), "ab") as f:
        f.write(b"\0")
    result = CliRunner().invoke(cli, ["verify", work, "-c", str(yaml), "--candidate", "fp8"])
    assert result.exit_code == 1 and "model.fp8.onnx is not the one calibrate.json names" in result.stderr
    before = sha(os.path.join(work, "model.qdq.onnx"))
    assert CliRunner().invoke(cli, ["calibrate", work, "--from-scales", "--precision", "fp8"]).exit_code == 0
    assert CliRunner().invoke(cli, ["verify", work, "-c", str(yaml), "--candidate", "fp8"]).exit_code in (0, 4)
    assert CliRunner().invoke(cli, ["calibrate", work, "--from-scales"]).exit_code == 0
    assert not os.path.exists(os.path.join(work, "model.fp8.onnx"))  # made from these scales, but not asked for
    assert sha(os.path.join(work, "model.qdq.onnx")) == before


def test_qdq_rebuilt_from_scales_is_identical(zh_export, tmp_path):
    from trtbuild.calibrate.qdq import qdq_from_scales

    work = fresh_copy(zh_export, tmp_path / "w")
    calibrate(make_config(work), show_bar=False)
    original = sha(os.path.join(work, "model.qdq.onnx"))
    os.remove(os.path.join(work, "model.qdq.onnx"))
    result = CliRunner().invoke(cli, ["calibrate", work, "--from-scales"])
    assert result.exit_code == 0, result.output
    assert sha(os.path.join(work, "model.qdq.onnx")) == original
    os.remove(os.path.join(work, "scales.json"))
    with pytest.raises(TrtbuildError, match="scales.json not found; run `trtbuild calibrate"):
        qdq_from_scales(work)
