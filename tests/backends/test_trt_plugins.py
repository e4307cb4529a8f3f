"""The plugin backend's CPU half: checkpoint reading, the QKV layout, INT8 ranges from scales.json, and a numpy
forward pass that follows the plugin network's recipe, checked against torch (the TensorRT half: tests/gpu)."""

import json
import os

import numpy as np
import pytest

from trtbuild.backends.trt.plugins import PluginBackendError, interleave_qkv, layer_ranges, load_bert, read_safetensors
from trtbuild.config import BuildConfig
from trtbuild.errors import ConfigError


def _layernorm(x, gamma, beta):  # as the plugins compute it: no epsilon
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-12) * gamma + beta


def _erf(x):
    import math

    return np.vectorize(math.erf)(x)


def plugin_recipe_forward(spec, w, ids, mask, types):
    """BERT as plugin_network builds it: embeddings + LayerNorm; per layer one interleaved QKV GEMM read head by
    head ([N, 3, H] on the output axis), masked softmax over the first n tokens, dense + skip-LayerNorm, FFN with
    exact GELU, dense + skip-LayerNorm; pooler on token 0 and the classifier."""
    b, s = ids.shape
    pos = np.arange(s)
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][pos][None]
         + w["embeddings.token_type_embeddings.weight"][types])
    x = _layernorm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    n, h = spec.heads, spec.head_size
    valid = mask.sum(1)
    keymask = np.where(np.arange(s)[None, :] < valid[:, None], 0.0, -np.inf)[:, None, None, :]
    for i in range(spec.layers):
        p = "encoder.layer.{}.".format(i)
        wall, ball = interleave_qkv(*[w[p + "attention.self.{}.{}".format(m, k)] for k in ("weight", "bias")
                                      for m in ("query", "key", "value")], heads=n)
        qkv = (x @ wall.T + ball).reshape(b, s, n, 3, h)
        q, k, v = (qkv[:, :, :, j].transpose(0, 2, 1, 3) for j in range(3))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(h) + keymask
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, n * h)
        a = ctx @ w[p + "attention.output.dense.weight"].T + w[p + "attention.output.dense.bias"]
        x = _layernorm(a + x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
        m = x @ w[p + "intermediate.dense.weight"].T + w[p + "intermediate.dense.bias"]
        m = m * 0.5 * (1 + _erf(m / np.sqrt(2)))
        o = m @ w[p + "output.dense.weight"].T + w[p + "output.dense.bias"]
        x = _layernorm(o + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    pooled = np.tanh(x[:, 0] @ w["pooler.dense.weight"].T + w["pooler.dense.bias"])
    return pooled @ w["classifier.weight"].T + w["classifier.bias"]


def test_plugin_recipe_matches_torch(tiny_checkpoint):
    """The weights, names and layouts the plugin network uses reproduce the checkpoint's own logits."""
    import torch
    from transformers import BertForSequenceClassification

    spec, w = load_bert(tiny_checkpoint)
    assert (spec.hidden, spec.heads, spec.layers, spec.head_size) == (32, 2, 2, 16)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 300, size=(3, 12))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    types = np.zeros_like(ids)
    types[:, 6:] = 1
    model = BertForSequenceClassification.from_pretrained(tiny_checkpoint, attn_implementation="eager").eval()
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                    token_type_ids=torch.tensor(types)).logits.numpy()
    got = plugin_recipe_forward(spec, w, ids, mask, types)
    assert np.abs(got - ref).max() < 1e-4


def test_interleave_puts_each_heads_qkv_together():
    rng = np.random.default_rng(1)
    e, heads = 8, 2
    wq, wk, wv = (rng.standard_normal((e, e)).astype(np.float32) for _ in range(3))
    bq, bk, bv = (rng.standard_normal(e).astype(np.float32) for _ in range(3))
    w, b = interleave_qkv(wq, wk, wv, bq, bk, bv, heads)
    assert w.shape == (3 * e, e) and b.shape == (3 * e,)
    np.testing.assert_array_equal(w[0:4], wq[0:4])  # head 0: q, k, v rows 0..3
    np.testing.assert_array_equal(w[4:8], wk[0:4])
    np.testing.assert_array_equal(w[8:12], wv[0:4])
    np.testing.assert_array_equal(w[12:16], wq[4:8])  # head 1
    np.testing.assert_array_equal(b[16:20], bk[4:8])


def test_read_safetensors_f16_and_bf16(tmp_path):
    import torch
    from safetensors.torch import save_file

    t = {"a": torch.arange(6, dtype=torch.float16).reshape(2, 3), "b": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
         "c": torch.arange(3, dtype=torch.int64)}
    save_file(t, str(tmp_path / "x.safetensors"))
    got = read_safetensors(str(tmp_path / "x.safetensors"))
    assert set(got) == {"a", "b"}  # integer buffers (position_ids) are skipped
    np.testing.assert_array_equal(got["a"], np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(got["b"], np.array([1.5, -2.0], np.float32))


def test_load_bert_refuses_what_the_plugins_cannot_run(tiny_checkpoint, tmp_path):
    import shutil

    with pytest.raises(PluginBackendError, match="missing; point model.checkpoint"):
        load_bert(str(tmp_path))
    copy = str(tmp_path / "ckpt")
    shutil.copytree(tiny_checkpoint, copy)
    cfg = json.load(open(os.path.join(copy, "config.json")))
    cfg.update(hidden_act="relu", layer_norm_eps=1e-5)
    json.dump(cfg, open(os.path.join(copy, "config.json"), "w"))
    with pytest.raises(PluginBackendError, match="hidden_act 'relu'; layer_norm_eps 1e-05.*use build.backend onnx"):
        load_bert(copy)
    with pytest.raises(PluginBackendError, match="changed since the export"):
        load_bert(tiny_checkpoint, expect_sha256="0" * 64)


def _scales(layers, attention=True, residual=False):
    acts = {"emb": {"amax": 4.0, "consumers": ["/inner/bert/encoder/layer.0/attention/self/query/MatMul"]}}
    for i in range(layers):
        p = "/inner/bert/encoder/layer.{}/".format(i)
        if residual:
            acts[p + "attention/output/dense/Add_output_0"] = {"amax": 9.0, "consumers": [p + "attention/output/Add"]}
            acts[p + "output/dense/Add_output_0"] = {"amax": 11.0, "consumers": [p + "output/Add"]}
        acts[p + "ctx"] = {"amax": 2.0 + i, "consumers": [p + "attention/output/dense/MatMul"]}
        acts[p + "ln1"] = {"amax": 19.0, "consumers": [p + "intermediate/dense/MatMul"]}
        acts[p + "gelu"] = {"amax": 33.0, "consumers": [p + "output/dense/MatMul"]}
        if attention:
            acts[p + "attention/self/Transpose_output_0"] = {"amax": 7.0, "consumers": [p + "attention/self/MatMul"]}
            acts[p + "attention/self/Transpose_2_output_0"] = {"amax": 8.0, "consumers": [p + "attention/self/MatMul"]}
            acts[p + "attention/self/Transpose_1_output_0"] = {"amax": 2.0, "consumers": [p + "attention/self/MatMul_1"]}
            acts[p + "attention/self/Softmax_output_0"] = {"amax": 0.99, "consumers": [p + "attention/self/MatMul_1"]}
        if i + 1 < layers:
            q = "/inner/bert/encoder/layer.{}/".format(i + 1)
            acts[p + "ln2"] = {"amax": 5.5, "consumers": [q + "attention/self/{}/MatMul".format(m)
                                                            for m in ("query", "key", "value")]}
    return {"activations": acts}


def test_layer_ranges_refuse_equalized_scales():
    scales = dict(_scales(12), equalization={"tensors": [{"tensor": "x", "factors": [1.0]}]})
    with pytest.raises(PluginBackendError, match="--no-equalize"):
        layer_ranges(scales, 12)


def test_layer_ranges_from_scales():
    r = layer_ranges(_scales(12), 12)
    assert len(r) == 12
    assert {k: v for k, v in r[0].items() if k != "residual"} == {
        "input": 4.0, "context": 2.0, "ffn_input": 19.0, "gelu": 33.0, "qkv": 8.0, "probs": 0.99, "attn_dense": None,
        "ffn_dense": None, "probs_max": 0.99}
    assert r[1]["input"] == 5.5 and r[11]["context"] == 13.0  # layer.1 is not layer.11
    assert [(x["attn_dense"], x["ffn_dense"]) for x in layer_ranges(_scales(2, residual=True), 2)] == [(9.0, 11.0)] * 2
    r = layer_ranges(_scales(2, attention=False), 2)
    assert r[1]["qkv"] is None and r[1]["probs"] is None  # FP16 attention between INT8 GEMMs
    scales = _scales(2)
    del scales["activations"]["/inner/bert/encoder/layer.1/gelu"]
    with pytest.raises(PluginBackendError, match="layer 1's gelu"):
        layer_ranges(scales, 2)


def test_backend_config():
    assert BuildConfig().backend == "onnx"
    assert BuildConfig(backend="plugins").backend == "plugins"
    with pytest.raises(ConfigError, match="backend"):
        BuildConfig(backend="tvm")
    assert BuildConfig().gelu is None and BuildConfig(backend="plugins").gelu_mode == "tanh"  # (measured: p8)
    assert BuildConfig(backend="plugins", gelu="model").gelu_mode == "model"
    with pytest.raises(ConfigError, match="gelu: must be model, tanh or plugin"):
        BuildConfig(backend="plugins", gelu="erf")
    with pytest.raises(ConfigError, match="gelu: needs backend: plugins"):
        BuildConfig(gelu="tanh")


def _strict(version="8.6.1"):
    from trt_api.strict import StrictTrt

    trt = StrictTrt(version)
    return trt, trt.Builder(trt.Logger(trt.Logger.ERROR))


def _made(trt, method, cls=None):
    """The calls of `method` (on `cls`, or any class) the network definition made on the strict stand-in."""
    return [(c, a, k) for c, m, a, k in trt.calls if m == method and (cls is None or c == cls)]


def _fields(trt):
    """{PluginField name: [its values, per field made]}."""
    out = {}
    for _, args, _ in _made(trt, "__init__", "PluginField"):
        out.setdefault(args[0], []).append(np.asarray(args[1]).tolist())
    return out


def test_plugin_network_definition_against_tensorrt_8_6_s_api(tiny_checkpoint):
    """The network definition code path, run against a strict stand-in made from TensorRT 8.6.1's real bindings
    (tests/trt_api; the real build is tests/gpu): which plugins, how many, INT8 attention only for one fixed
    fused-kernel sequence."""
    from trtbuild.backends.trt.plugins import BertSpec, plugin_network

    spec, w = load_bert(tiny_checkpoint)
    trt, builder = _strict()
    with pytest.raises(PluginBackendError, match="head size 64 only; this model's heads are 16 wide"):
        plugin_network(trt, builder, spec, w, ["input_ids", "attention_mask"], "fp16", [16])
    spec.head_size = 64  # the stand-in does not care about the widths
    trt, builder = _strict()
    network, keep = plugin_network(trt, builder, spec, w, ["input_ids", "token_type_ids", "attention_mask"], "fp16",
                                   [16, 32])
    created = [a[0] for _, a, _ in _made(trt, "create_plugin")]
    assert sorted(created) == sorted(["embeddings", "l0.attention", "l1.attention", "l0.attention_ln", "l0.ffn_ln",
                                      "l1.attention_ln", "l1.ffn_ln"])
    assert len(_made(trt, "add_fully_connected")) == 8 and not _made(trt, "add_convolution_nd")
    assert len(_made(trt, "mark_output")) == 1
    assert keep  # the numpy arrays TensorRT reads while building

    # build.gelu: the model's erf GELU as elementwise layers (fused by TensorRT), the tanh approximation, the plugin
    for mode, erf, tanh, gelu_plugins in (("model", 2, 1, 0), ("tanh", 0, 3, 0), ("plugin", 0, 1, 2)):  # (+1 tanh: pooler)
        trt, builder = _strict()
        plugin_network(trt, builder, spec, w, ["input_ids", "attention_mask"], "fp16", [16], gelu_mode=mode)
        created = [a[0] for _, a, _ in _made(trt, "create_plugin")]
        assert sum(n.endswith(".gelu") for n in created) == gelu_plugins, mode
        assert len(_made(trt, "add_unary")) == erf and len(_made(trt, "add_activation")) == tanh, mode
    with pytest.raises(PluginBackendError, match="build.gelu must be one of model, tanh, plugin"):
        plugin_network(trt, builder, spec, w, ["input_ids"], "fp16", [16], gelu_mode="fast")

    spec64 = BertSpec({"hidden_size": 128, "num_attention_heads": 2, "num_hidden_layers": 2, "intermediate_size": 64})
    ranges = layer_ranges(_scales(2), 2)
    for buckets, int8_attention in (([128], True), ([64, 128], False), ([32], False)):
        trt, builder = _strict()
        plugin_network(trt, builder, spec64, dict(w), ["input_ids", "attention_mask"], "int8", buckets, ranges)
        assert len(_made(trt, "add_convolution_nd")) == 8
        assert [a[2] for _, a, _ in _made(trt, "add_input")] == [(-1, buckets[0] if int8_attention else -1)] * 2
        assert (_fields(trt).get("dq_probs") is not None) == int8_attention


def varlen_recipe_forward(spec, w, packed):
    """The packed network's recipe: every text is the segment cu_seqlens[b]:cu_seqlens[b + 1] of the token
    stream, positions count from its start, its [CLS] is the segment's first token."""
    cu = packed["cu_seqlens"]
    out = []
    for b in range(len(cu) - 1):
        ids = packed["input_ids"][cu[b]:cu[b + 1]][None]
        types = packed["segment_ids"][cu[b]:cu[b + 1]][None]
        out.append(plugin_recipe_forward(spec, w, ids, np.ones_like(ids), types)[0])
    return np.stack(out)


def test_pack_varlen_gives_the_padded_batch_logits(tiny_checkpoint):
    from trtbuild.backends.trt.plugins import pack_varlen

    spec, w = load_bert(tiny_checkpoint)
    rng = np.random.default_rng(1)
    ids = rng.integers(5, 300, size=(3, 10))
    mask = np.zeros_like(ids)
    for row, n in enumerate((10, 4, 7)):
        mask[row, :n] = 1
    types = np.zeros_like(ids)
    types[:, 2:] = 1
    packed = pack_varlen({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    assert packed["cu_seqlens"].tolist() == [0, 10, 14, 21]
    assert packed["input_ids"].tolist() == ids[0].tolist() + ids[1, :4].tolist() + ids[2, :7].tolist()
    assert packed["max_seqlen"].shape == (10,) and all(a.dtype == np.int32 for a in packed.values())
    got = varlen_recipe_forward(spec, w, packed)
    assert np.abs(got - plugin_recipe_forward(spec, w, ids, mask, types)).max() < 1e-5
    no_types = pack_varlen({"input_ids": ids, "attention_mask": mask})
    assert not no_types["segment_ids"].any() and len(no_types["segment_ids"]) == 21


def test_pack_varlen_refuses_what_the_engine_cannot_take():
    from trtbuild.backends.trt.plugins import pack_varlen
    from trtbuild.errors import TrtbuildError

    ids = np.ones((2, 6), dtype=np.int64)
    left = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    with pytest.raises(TrtbuildError, match="right-padded batches only"):
        pack_varlen({"input_ids": ids, "attention_mask": left})
    empty = np.array([[1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    with pytest.raises(TrtbuildError, match="at least one token per text"):
        pack_varlen({"input_ids": ids, "attention_mask": empty})
    full = np.ones_like(ids)
    with pytest.raises(TrtbuildError, match="batch 2 exceeds the engine's max batch 1"):
        pack_varlen({"input_ids": ids, "attention_mask": full}, max_batch=1)
    with pytest.raises(TrtbuildError, match="a text of 6 tokens exceeds the engine's longest 4"):
        pack_varlen({"input_ids": ids, "attention_mask": full}, max_len=4)
    with pytest.raises(TrtbuildError, match="needs the attention mask"):
        pack_varlen({"input_ids": ids})


def test_varlen_config_and_profile():
    from trtbuild.backends.trt.profiles import config_profiles, varlen_shapes
    from trtbuild.config import DataConfig, default_config

    with pytest.raises(ConfigError, match="varlen: needs backend: plugins"):
        BuildConfig(varlen=True)
    with pytest.raises(ConfigError, match="varlen: takes no profiles or static_batches"):
        BuildConfig(backend="plugins", varlen=True, static_batches=(64,))
    config = default_config("v").replace(data=DataConfig(buckets=(32, 64, 128, 256)),
                                         build=BuildConfig(backend="plugins", varlen=True, max_batch=64))
    (profile,) = config_profiles(config, 256)
    assert (profile.min, profile.opt, profile.max) == ((1, 1), (64, 128), (64, 256))
    assert varlen_shapes(profile) == {"input_ids": ((1,), (8192,), (16384,)),
                                      "segment_ids": ((1,), (8192,), (16384,)),
                                      "cu_seqlens": ((2,), (65,), (65,)), "max_seqlen": ((1,), (128,), (256,))}
    too_long = config.replace(data=DataConfig(buckets=(128, 1024)))
    from trtbuild.errors import TrtbuildError

    with pytest.raises(TrtbuildError, match="build.varlen takes texts of up to 384 tokens; the largest bucket is 1024"):
        config_profiles(too_long, 1024)


def test_varlen_network_definition_against_tensorrt_8_6_s_api(tiny_checkpoint):
    """The packed network: version-2 plugins, the four packed inputs, attention fed (qkv, dummy mask,
    cu_seqlens, max_seqlen), [CLS] rows gathered at cu_seqlens[:B]; INT8 (scope gemm) keeps FP16 attention."""
    from trtbuild.backends.trt.plugins import VARLEN_INPUTS, plugin_network

    spec, w = load_bert(tiny_checkpoint)
    spec.head_size = 64  # the stand-in does not care about the widths
    for precision in ("fp16", "int8"):
        trt, builder = _strict()
        ranges = layer_ranges(_scales(2), 2) if precision == "int8" else None
        plugin_network(trt, builder, spec, w, ["input_ids", "attention_mask"], precision, [32, 64, 128, 256], ranges,
                       varlen=True)
        assert {a[1] for _, a, _ in _made(trt, "get_plugin_creator")} == {"2"}
        assert [a[0] for _, a, _ in _made(trt, "add_input")] == list(VARLEN_INPUTS)
        assert all(a[2] == (-1,) for _, a, _ in _made(trt, "add_input"))
        inputs = [a[0] for _, a, _ in _made(trt, "add_plugin_v2")]
        assert len(inputs[0]) == 4  # the embedding plugin: ids, segment ids, cu_seqlens, max_seqlen
        assert sorted(len(i) for i in inputs[1:]) == [2] * 4 + [4] * 2  # skip-LayerNorms, then attentions
        fields = _fields(trt)
        assert "var_seqlen" in fields and "mha_type_id" not in fields and "dq_probs" not in fields
        assert len(_made(trt, "add_slice")) == 1 and len(_made(trt, "mark_output")) == 1
        assert not _made(trt, "add_cast")  # 8.6: shape tensors are INT32 already


def test_int8_scope_puts_attention_and_the_residual_stream_in_int8(tiny_checkpoint):
    """build.int8_scope on the packed INT8 network (TensorRT 8.6.1's API): gemm keeps attention and skip-LayerNorm
    FP16 (GEMMs write FP16); attention makes the attention plugin INT8 (dq_probs: the probabilities' calibrated
    maximum / 127, an INT8 QKV output);
    full also makes every skip-LayerNorm but the last INT8, with the residual stream's ranges at their calibrated
    maximum; each refuses scales without its ranges."""
    from trtbuild.backends.trt.plugins import plugin_network

    spec, w = load_bert(tiny_checkpoint)
    spec.head_size = 64  # the stand-in does not care about the widths

    def build(scope, scales):
        trt, builder = _strict()
        plugin_network(trt, builder, spec, w, ["input_ids", "attention_mask"], "int8", [128], layer_ranges(scales, 2),
                       varlen=True, int8_scope=scope)
        ranges = {round(a[1], 3) for _, a, _ in _made(trt, "set_dynamic_range")}
        return _fields(trt), len(_made(trt, "set_output_type")), ranges

    fields, fp16_outputs, _ = build("gemm", _scales(2, residual=True))
    assert fields["type_id"] == [[1]] * 6 and "dq_probs" not in fields  # 2 attentions + 4 skip-LayerNorms, FP16
    assert fp16_outputs == 3 * 2  # QKV, attention-out and FFN-out GEMMs write FP16
    fields, fp16_outputs, _ = build("attention", _scales(2))
    assert sorted(fields["type_id"]) == [[1]] * 4 + [[2]] * 2 and len(fields["dq_probs"]) == 2
    assert fields["dq_probs"][0][0] == pytest.approx(0.99 / 127) and fp16_outputs == 2 * 2
    with pytest.raises(PluginBackendError, match="hidden size 768 or 1024 only"):
        build("full", _scales(2, residual=True))
    spec.hidden = 768
    fields, fp16_outputs, ranges = build("full", _scales(2, residual=True))
    assert sorted(fields["type_id"]) == [[1]] + [[2]] * 5  # only the last layer's FFN skip-LayerNorm stays FP16
    assert fp16_outputs == 1  # the last FFN-out GEMM, into that FP16 skip-LayerNorm
    assert {9.0, 11.0} <= ranges  # the dense outputs entering the residual Adds
    with pytest.raises(PluginBackendError, match="quantize_residual: true"):
        build("full", _scales(2))
    with pytest.raises(PluginBackendError, match="quantize_attention: true"):
        build("attention", _scales(2, attention=False))
    with pytest.raises(ConfigError, match="int8_scope: full needs backend: plugins with varlen: true"):
        BuildConfig(backend="plugins", int8_scope="full")
    with pytest.raises(ConfigError, match="int8_scope: must be gemm, attention or full"):
        BuildConfig(backend="plugins", varlen=True, int8_scope="all")
    assert BuildConfig(backend="plugins", varlen=True).int8_scope_mode == "gemm"


def test_a_refused_plugin_is_a_one_line_error():
    from unittest import mock

    from trtbuild.backends.trt.plugins import _create

    creator = mock.MagicMock()
    creator.name = "CustomQKVToContextPluginDynamic"
    creator.create_plugin.return_value = None
    with pytest.raises(PluginBackendError, match="CustomQKVToContextPluginDynamic plugin refused the fields for "
                                                 "l0.attention"):
        _create(creator, "l0.attention", [], mock.MagicMock())
