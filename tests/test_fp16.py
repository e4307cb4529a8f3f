"""The FP16-cast ONNX of strongly typed builds (TensorRT 11): made with onnxconverter-common, LayerNorm,
Softmax, reductions and Q/DQ kept FP32, inputs and outputs unchanged; verify measures it in ONNX Runtime."""

import json
import os

import numpy as np
from click.testing import CliRunner
from helpers import DATA

from trtbuild.cli import cli
from trtbuild.config import DataConfig, ExportConfig, default_config, with_overrides
from trtbuild.export import export_onnx


def test_fp16_cast_keeps_the_models_predictions_and_verify_measures_it(chinese_checkpoint, tmp_path):
    import onnx
    import onnxruntime as ort

    from trtbuild.backends.fp16 import FP32_OPS, write_fp16_onnx

    work = str(tmp_path / "w")
    export_onnx(with_overrides(default_config("zh"), checkpoint=chinese_checkpoint, workdir=work).replace(
        export=ExportConfig(max_length=64), data=DataConfig(buckets=(16, 32, 64))))
    src, dst = os.path.join(work, "model.onnx"), str(tmp_path / "model.fp16.onnx")
    write_fp16_onnx(src, dst)
    cast = onnx.load(dst)
    original = onnx.load(src)
    assert [(i.name, i.type.tensor_type.elem_type) for i in cast.graph.input] == \
        [(i.name, i.type.tensor_type.elem_type) for i in original.graph.input]
    assert cast.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    big = [i for i in cast.graph.initializer if len(i.dims) == 2 and min(i.dims) > 8]
    assert big and all(i.data_type == onnx.TensorProto.FLOAT16 for i in big)  # the GEMM weights are FP16
    types = {v.name: v.type.tensor_type.elem_type for v in list(cast.graph.value_info) + list(cast.graph.input)}
    inits = {i.name: i.data_type for i in cast.graph.initializer}
    for node in cast.graph.node:
        if node.op_type in FP32_OPS:  # fed FP32: a Cast in front where the graph around them is FP16
            assert all(types.get(i, inits.get(i, onnx.TensorProto.FLOAT)) != onnx.TensorProto.FLOAT16
                       for i in node.input if i), node.name
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 21128, size=(4, 32)).astype(np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    ref = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = ort.InferenceSession(dst, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert np.abs(got - ref).max() < 0.02 * (np.abs(ref).max() + 1e-3) + 1e-3

    yaml = tmp_path / "c.yaml"
    yaml.write_text("model: {{name: zh, workdir: {}}}\nexport: {{max_length: 64}}\n"
                    "data: {{buckets: [16, 32, 64], eval: [{}]}}\n".format(
        work, os.path.join(DATA, "slang", "eval.jsonl")), encoding="utf-8")
    result = CliRunner().invoke(cli, ["verify", work, "-c", str(yaml), "--candidate", "fp16-onnx"])
    assert result.exit_code == 0, result.output  # an FP16 cast of a tiny model flips nothing
    report = json.load(open(os.path.join(work, "reports", "verify-fp16-onnx.json"), encoding="utf-8"))
    assert report["slices"]["all"]["flips"] == 0 and report["candidate"].endswith(".onnx")
    assert "cache" in report["candidate"]  # made once, by the export's hash
