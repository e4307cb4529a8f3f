"""`build.backend: plugins`: the BERT encoder written with TensorRT's own BERT plugins instead of parsed from ONNX.

NVIDIA's demo/BERT recipe (TensorRT 8.6, `demo/BERT/builder.py`), rebuilt for a Hugging Face
BertForSequenceClassification checkpoint:

- CustomEmbLayerNormPluginDynamic (word + position + token-type embeddings, LayerNorm, and the
  mask index the attention plugin reads), CustomQKVToContextPluginDynamic (fused multi-head
  attention on one interleaved QKV projection), CustomSkipLayerNormPluginDynamic (residual +
  bias + LayerNorm), TensorRT fully connected / 1x1 convolution layers for the GEMMs, GELU as
  pointwise layers that TensorRT fuses into the GEMM before it. Sequence-major [S, B, E, 1, 1]
  inside; the engine's inputs and output are the ONNX export's (`input_ids`, `attention_mask`
  [, `token_type_ids`] as [batch, seq]; `logits` [batch, labels]), so runners, verify and bench
  treat both backends alike.
- Weights come from the checkpoint's model.safetensors (read with numpy, no torch on the GPU
  side), checked against the hash the export recorded, so the engine is the model the ONNX
  baseline was made from.
- INT8 (implicit quantization, no calibrator: TensorRT 8.6's crashes here): the dynamic ranges of
  the GEMM inputs, Q/K/V, the attention probabilities and the context come from trtbuild's own
  calibration (`scales.json`, mapped by the ONNX nodes that consume each tensor). Fixed length: the
  attention plugin runs INT8 only where its fused INT8 kernels exist (sequence 64, 96, 128, 384;
  head size 64) and the sequence length is fixed in the network (an engine with one bucket);
  otherwise it stays FP16 between INT8 GEMMs. Variable length: `build.int8_scope` (below).
- Padding: the plugins read the attention mask as "the first n tokens are real" (right padding,
  as trtbuild's tokenizer pads).
- `build.varlen: true`: the variable-length versions of the same plugins (`demo/BERT/
  builder_varseqlen.py`, plugin version 2). The engine takes the batch *packed*: `input_ids` and
  `segment_ids` [total tokens], `cu_seqlens` [batch + 1] (where each text starts) and a dummy
  `max_seqlen` [longest text] whose length picks the fused attention kernel (FP16 on sm90: 64, 96,
  128, 256, 384; nothing is padded to it). The runners pack [batch, seq] feeds on the host
  (`pack_varlen`), so callers still pass the ONNX export's inputs. What the INT8 engine runs in INT8 is
  `build.int8_scope`: the GEMMs (gemm, default), + the attention plugin (attention), + skip-LayerNorm and
  the residual stream (full: NVIDIA's MLPerf Inference v3.0 `int8_builder_var_seqlen.py`, which runs the
  whole encoder in INT8 and never forces FP16 between INT8 GEMMs).
"""

import json
import os
import struct

import numpy as np

from trtbuild.backends.trt.profiles import VARLEN_MAX_SEQUENCE
from trtbuild.config import DEFAULT_GELU, DEFAULT_INT8_SCOPE, GELU_MODES, INT8_SCOPES
from trtbuild.errors import TrtbuildError
from trtbuild.workdir import sha256_file

PLUGIN_CREATORS = ("CustomEmbLayerNormPluginDynamic", "CustomQKVToContextPluginDynamic",
                   "CustomSkipLayerNormPluginDynamic")
GELU_PLUGIN = "CustomGeluPluginDynamic"  # version 1 in both plugin sets: GELU's tanh approximation, its own kernel
VARLEN_INPUTS = ("input_ids", "segment_ids", "cu_seqlens", "max_seqlen")  # the packed engine's inputs, in order
INT8_MHA_SEQUENCES = (64, 96, 128, 384)  # fused INT8 attention kernels (TensorRT 8.6, sm75..sm90)
SAFETENSORS = "model.safetensors"
INT8_SKIP_LN_HIDDEN = (768, 1024)  # CustomSkipLayerNormPluginDynamic's INT8 kernels (TensorRT 8.6, skipLayerNormKernel.cu)


class PluginBackendError(TrtbuildError):
    """The checkpoint or the TensorRT install cannot take the plugin path."""


# ---------------------------------------------------------------------------------------------
# The checkpoint, without torch

def read_safetensors(path):
    """{name: float32 ndarray} of a .safetensors file (F32, F16 and BF16 tensors; integer buffers skipped)."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size).decode("utf-8"))
        blob = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = blob[start:end]
        kind = info["dtype"]
        if kind == "F32":
            arr = np.frombuffer(raw, dtype="<f4")
        elif kind == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif kind == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            continue
        out[name] = arr.reshape(info["shape"])
    return out


class BertSpec(object):
    """What the plugin network needs to know of a checkpoint's config.json."""

    def __init__(self, config):
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.intermediate = int(config["intermediate_size"])
        self.act = config.get("hidden_act", "gelu")
        self.head_size = self.hidden // self.heads


def load_bert(checkpoint, expect_sha256=None):
    """(BertSpec, weights) of a BertForSequenceClassification checkpoint directory, with one-line errors for
    what the plugins cannot run."""
    cfg_path = os.path.join(checkpoint, "config.json")
    st_path = os.path.join(checkpoint, SAFETENSORS)
    if not os.path.isfile(cfg_path) or not os.path.isfile(st_path):
        raise PluginBackendError("build.backend plugins reads the weights from {}/{{config.json,{}}}, which are "
                                 "missing; point model.checkpoint at the exported checkpoint or use build.backend "
                                 "onnx".format(checkpoint, SAFETENSORS))
    with open(cfg_path) as f:
        config = json.load(f)
    problems = []
    if config.get("model_type") != "bert":
        problems.append("model_type {!r} (needs bert)".format(config.get("model_type")))
    if config.get("position_embedding_type", "absolute") != "absolute":
        problems.append("position_embedding_type {!r}".format(config.get("position_embedding_type")))
    if config.get("hidden_act", "gelu") not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
        problems.append("hidden_act {!r}".format(config.get("hidden_act")))
    if float(config.get("layer_norm_eps", 1e-12)) > 1e-6:
        problems.append("layer_norm_eps {} (the plugins' LayerNorm has no epsilon; fine only for ~1e-12)".format(
            config.get("layer_norm_eps")))
    if problems:
        raise PluginBackendError("the TensorRT BERT plugins cannot run this checkpoint ({}); use build.backend "
                                 "onnx".format("; ".join(problems)))
    if expect_sha256:
        if sha256_file(st_path) != expect_sha256:
            raise PluginBackendError("{} changed since the export (its hash differs from export.json); re-run "
                                     "`trtbuild export --force` so the engine and the ONNX baseline are one "
                                     "model".format(st_path))
    spec = BertSpec(config)
    weights = read_safetensors(st_path)
    weights = {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in weights.items()}
    need = ["embeddings.word_embeddings.weight", "pooler.dense.weight", "classifier.weight"]
    missing = [k for k in need if k not in weights]
    if missing:
        raise PluginBackendError("{} lacks {} (a BertForSequenceClassification checkpoint with a pooler is "
                                 "needed); use build.backend onnx".format(st_path, ", ".join(missing)))
    return spec, weights


def interleave_qkv(wq, wk, wv, bq, bk, bv, heads):
    """One [3E, E] weight and [3E] bias whose output holds, head by head, that head's Q, K and V
    (the layout CustomQKVToContextPluginDynamic reads; weights [out, in] as torch stores them)."""
    hidden = wq.shape[0]
    size = hidden // heads
    w = np.stack([wq, wk, wv]).reshape(3, heads, size, hidden).transpose(1, 0, 2, 3).reshape(3 * hidden, hidden)
    b = np.stack([bq, bk, bv]).reshape(3, heads, size).transpose(1, 0, 2).reshape(3 * hidden)
    return np.ascontiguousarray(w, dtype=np.float32), np.ascontiguousarray(b, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# INT8 ranges from trtbuild's calibration

def layer_ranges(scales, layers):
    """Per encoder layer, the amax of: its input, Q/K/V (max of the three), the attention probabilities, the
    context, the FFN input, the GELU output and (calibrated with quantize_residual) the two dense outputs entering
    the residual Adds, from scales.json (each found through the ONNX node that consumes it). A layer whose
    attention core was not calibrated gets qkv/probs None (FP16 attention), one without residual scales
    attn_dense/ffn_dense None.
    Raises when a GEMM input has no scale (the Q/DQ placement excluded it: the plugin path cannot mix)."""
    if (scales or {}).get("equalization"):
        raise PluginBackendError("scales.json was calibrated with equalization, whose factors live in an equalized "
                                 "ONNX graph that build.backend plugins does not build from; calibrate with "
                                 "`--no-equalize` (calibrate.equalize: false) for the plugins backend, or build with "
                                 "build.backend onnx")
    acts = (scales or {}).get("activations", {})
    by_consumer = {}  # consumer node -> [(tensor, amax, largest value seen in calibration)]
    for name, a in acts.items():
        for c in a.get("consumers", []):
            by_consumer.setdefault(c, []).append((name, float(a["amax"]), float(a.get("max_abs") or a["amax"])))

    def ranges(i, suffix, pick=None):
        """(amax, max_abs) of the tensor(s) layer i's node `suffix` consumes (the largest of each where several
        match `pick`), or (None, None)."""
        tail = "/layer.{}/{}".format(i, suffix)
        for consumer, found in by_consumer.items():
            if consumer.endswith(tail):
                vals = [(a, m) for n, a, m in found if pick is None or pick(n)]
                if vals:
                    return max(a for a, _ in vals), max(m for _, m in vals)
        return None, None

    def amax(i, suffix, pick=None):
        return ranges(i, suffix, pick)[0]

    out = []
    for i in range(layers):
        r = {
            "input": amax(i, "attention/self/query/MatMul"),
            "context": amax(i, "attention/output/dense/MatMul"),
            "ffn_input": amax(i, "intermediate/dense/MatMul"),
            "gelu": amax(i, "output/dense/MatMul"),
        }
        missing = [k for k, v in r.items() if v is None]
        if missing:
            raise PluginBackendError("scales.json has no scale for layer {}'s {} (excluded from quantization?); "
                                     "the INT8 plugin path needs every GEMM input calibrated: re-run "
                                     "`trtbuild calibrate` without exclusions".format(i, ", ".join(missing)))
        qk = amax(i, "attention/self/MatMul")
        v = amax(i, "attention/self/MatMul_1", lambda n: "Softmax" not in n)
        probs, probs_max = ranges(i, "attention/self/MatMul_1", lambda n: "Softmax" in n)
        r["qkv"] = max(qk, v) if qk is not None and v is not None else None
        r["probs"] = probs if r["qkv"] is not None else None
        # the INT8 attention's probability step: their largest value seen in calibration (1 for a peaked head, far
        # less for a flat one), so that no probability is clipped and a flat head keeps its resolution
        r["probs_max"] = min(1.0, probs_max) if r["probs"] is not None and probs_max else None
        # the dense outputs entering the residual Adds (calibrate.quantize_residual): build.int8_scope full
        attn_dense = ranges(i, "attention/output/Add", lambda n: "/dense/" in n)
        ffn_dense = ranges(i, "output/Add", lambda n: "/output/dense/" in n and "attention" not in n)
        r["attn_dense"], r["ffn_dense"] = attn_dense[0], ffn_dense[0]
        # build.int8_scope full quantizes the residual stream with these tensors' ranges: their largest value
        # seen in calibration (a clipped residual stream cost 20 points on the default model, qdq.py)
        r["residual"] = {"input": ranges(i, "attention/self/query/MatMul")[1],
                         "ffn_input": ranges(i, "intermediate/dense/MatMul")[1],
                         "attn_dense": attn_dense[1], "ffn_dense": ffn_dense[1]}
        out.append(r)
    return out


# ---------------------------------------------------------------------------------------------
# The network

def load_plugins(trt, logger, version="1"):
    """Register TensorRT's plugin library; a one-line error if it (or a BERT plugin) cannot be loaded. Version
    "1": fixed sequence length ([S, B, E, 1, 1] tensors); "2": variable length (packed [tokens, E, 1, 1])."""
    try:
        trt.init_libnvinfer_plugins(logger, "")
    except Exception as e:  # pragma: no cover - depends on the install
        raise PluginBackendError("TensorRT's plugin library did not load ({}); use build.backend onnx".format(e))
    registry = trt.get_plugin_registry()
    if not hasattr(registry, "get_plugin_creator"):  # TensorRT 11: get_creator, strongly typed networks only
        raise PluginBackendError("build.backend plugins runs on TensorRT 8.6 and 10.x; TensorRT {} removed the "
                                 "weakly typed network it writes (get_plugin_creator, layer precisions, "
                                 "set_dynamic_range): use build.backend onnx".format(trt.__version__))
    creators = {}
    for name in PLUGIN_CREATORS:
        creator = registry.get_plugin_creator(name, version, "")
        if creator is None:
            raise PluginBackendError("TensorRT {} has no {} plugin version {}; use build.backend onnx".format(
                trt.__version__, name, version))
        creators[name] = creator
    return creators


def plugin_network(trt, builder, spec, weights, input_names, precision, buckets, ranges=None, logger=None,
                   varlen=False, gelu_mode=DEFAULT_GELU, int8_scope=DEFAULT_INT8_SCOPE):
    """Define the BERT classifier on a new explicit-batch network of `builder` with TensorRT's BERT plugins.
    Returns (network, keep): `keep` holds the numpy arrays TensorRT references until the engine is built.
    `precision` fp16 or int8 (int8 needs `ranges` from layer_ranges). `varlen`: the packed variable-length
    network (inputs VARLEN_INPUTS, see the module doc) instead of [batch, seq] inputs. `gelu_mode` (build.gelu):
    model, the checkpoint's own GELU (exact erf for hidden_act gelu) as elementwise layers TensorRT fuses into
    the FFN-in GEMM; tanh, the tanh approximation as such layers (a faster fused GEMM on the H100); plugin,
    TensorRT's GELU plugin (tanh approximation), a kernel of its own after an unfused GEMM. `int8_scope`
    (build.int8_scope, INT8 + varlen): gemm, INT8 GEMMs writing FP16 for FP16 attention and skip-LayerNorm;
    attention, + the fused INT8 attention (QKV GEMM writes INT8, dq_probs from the probabilities' amax); full, +
    INT8 skip-LayerNorm fed by INT8 GEMM outputs, the residual stream in INT8 (NVIDIA's MLPerf v3.0
    `int8_builder_var_seqlen.py`), the last layer's skip-LayerNorm in FP16 (its output feeds the FP32 head)."""
    if gelu_mode not in GELU_MODES:
        raise PluginBackendError("build.gelu must be one of {} (got {!r})".format(", ".join(GELU_MODES), gelu_mode))

    if spec.head_size != 64:
        raise PluginBackendError("TensorRT 8.6's attention plugin picks its fused kernels by sequence length alone and "
                                 "has them for head size 64 only; this model's heads are {} wide: use build.backend "
                                 "onnx".format(spec.head_size))
    creators = load_plugins(trt, logger or trt.Logger(trt.Logger.ERROR), "2" if varlen else "1")
    if gelu_mode == "plugin":
        creators[GELU_PLUGIN] = trt.get_plugin_registry().get_plugin_creator(GELU_PLUGIN, "1", "")
        if creators[GELU_PLUGIN] is None:
            raise PluginBackendError("TensorRT {} has no {} plugin; set build.gelu tanh".format(trt.__version__,
                                                                                                  GELU_PLUGIN))
    int8 = precision == "int8"
    if int8 and ranges is None:
        raise PluginBackendError("the INT8 plugin engine needs scales.json; run `trtbuild calibrate` first")
    if int8_scope not in INT8_SCOPES:
        raise PluginBackendError("build.int8_scope must be one of {} (got {!r})".format(", ".join(INT8_SCOPES),
                                                                                          int8_scope))
    scope = int8_scope if int8 and varlen else "gemm"
    if scope in ("attention", "full") and not all(r["qkv"] is not None and r["probs"] is not None for r in ranges):
        raise PluginBackendError("build.int8_scope {} runs the attention in INT8, but scales.json has no Q/K/V or "
                                 "probability scales: calibrate with calibrate.quantize_attention: true".format(scope))
    if scope == "full" and not all(r["attn_dense"] is not None and r["ffn_dense"] is not None for r in ranges):
        raise PluginBackendError("build.int8_scope full needs the ranges of the dense outputs entering the residual "
                                 "Adds, which scales.json lacks: calibrate with calibrate.quantize_residual: true "
                                 "(the plugins backend uses only its scales)")
    full = scope == "full"
    if full and spec.hidden not in INT8_SKIP_LN_HIDDEN:
        raise PluginBackendError("build.int8_scope full: TensorRT 8.6's INT8 skip-LayerNorm kernels exist for hidden "
                                 "size 768 or 1024 only (this model: {}); use int8_scope attention".format(spec.hidden))
    # INT8 attention: the packed plugin (version 2, any length up to 512) with int8_scope attention/full; the
    # fixed-length one needs a sequence fixed in the network itself (one bucket) with a fused kernel
    int8_mha = scope in ("attention", "full") or (
        int8 and not varlen and spec.head_size == 64 and len(buckets) == 1 and buckets[0] in INT8_MHA_SEQUENCES
        and all(r["qkv"] is not None for r in ranges))
    mha_type = trt.int8 if int8_mha else trt.float16
    ln_type = trt.float16
    E, keep = spec.hidden, []
    unit = (1,) * (4 if varlen else 5)  # constant shape: [tokens, E, 1, 1] packed, [S, B, E, 1, 1] otherwise

    def arr(x, dtype=np.float32):
        a = np.ascontiguousarray(x, dtype=dtype)
        keep.append(a)
        return a

    def field(name, value, kind):
        a = arr(value, np.int32 if kind == trt.PluginFieldType.INT32 else np.float32)
        return trt.PluginField(name, a, kind)

    def rng(tensor, amax):
        if int8 and amax is not None:
            tensor.set_dynamic_range(-float(amax), float(amax))

    def const(x, dtype=np.float32):
        a = arr(x, dtype)
        return network.add_constant(a.shape, trt.Weights(a)).get_output(0)

    def dense(x, w, b, out_features, name):
        """[S, B, K, 1, 1] -> [S, B, N, 1, 1] (packed: [T, K, 1, 1] -> [T, N, 1, 1]); INT8 as a 1x1 convolution."""
        wa, ba = arr(w), arr(b)
        if int8 or not hasattr(network, "add_fully_connected"):  # (TensorRT 10 removed fully connected layers)
            layer = network.add_convolution_nd(x, out_features, (1, 1), trt.Weights(wa), trt.Weights(ba))
        else:
            layer = network.add_fully_connected(x, out_features, trt.Weights(wa), trt.Weights(ba))
        layer.name = name
        return layer

    def skip_layernorm(x, skip, prefix, name, in_int8=False):
        fields = [field("ld", [E], trt.PluginFieldType.INT32),
                  field("type_id", [int(trt.int8 if in_int8 else ln_type)], trt.PluginFieldType.INT32),
                  field("beta", weights[prefix + ".bias"], trt.PluginFieldType.FLOAT32),
                  field("gamma", weights[prefix + ".weight"], trt.PluginFieldType.FLOAT32)]
        plugin = _create(creators["CustomSkipLayerNormPluginDynamic"], name, fields, trt)
        layer = network.add_plugin_v2([x, skip], plugin)
        layer.name = name
        return layer.get_output(0)

    def gelu(x, name):
        if gelu_mode == "plugin":
            plugin = _create(creators[GELU_PLUGIN], name, [field("type_id", [int(trt.float16)],
                                                                 trt.PluginFieldType.INT32)], trt)
            layer = network.add_plugin_v2([x], plugin)
            layer.name = name
            return layer.get_output(0)
        if spec.act == "gelu" and gelu_mode == "model":  # exact: x * 0.5 * (1 + erf(x / sqrt(2)))
            scaled = network.add_elementwise(x, const(np.full(unit, 0.7071067811865476)),
                                             trt.ElementWiseOperation.PROD).get_output(0)
            inner = network.add_unary(scaled, trt.UnaryOperation.ERF).get_output(0)
        else:  # tanh approximation (gelu_new, gelu_pytorch_tanh)
            cube = network.add_elementwise(x, const(np.full(unit, 3.0)),
                                           trt.ElementWiseOperation.POW).get_output(0)
            t = network.add_elementwise(cube, const(np.full(unit, 0.044715)),
                                        trt.ElementWiseOperation.PROD).get_output(0)
            t = network.add_elementwise(x, t, trt.ElementWiseOperation.SUM).get_output(0)
            t = network.add_elementwise(t, const(np.full(unit, 0.7978845608028654)),
                                        trt.ElementWiseOperation.PROD).get_output(0)
            inner = network.add_activation(t, trt.ActivationType.TANH).get_output(0)
        one = network.add_elementwise(inner, const(np.full(unit, 1.0)),
                                      trt.ElementWiseOperation.SUM).get_output(0)
        half = network.add_elementwise(one, const(np.full(unit, 0.5)),
                                       trt.ElementWiseOperation.PROD).get_output(0)
        out = network.add_elementwise(half, x, trt.ElementWiseOperation.PROD)
        out.name = name
        return out.get_output(0)

    flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    if varlen:  # the packed inputs VARLEN_INPUTS, as the embedding plugin version 2 reads them
        emb_inputs = [network.add_input(n, trt.int32, (-1,)) for n in VARLEN_INPUTS]
    else:
        emb_inputs = _emb_inputs(trt, network, input_names, buckets[0] if int8_mha else -1, const)
    emb_fields = [
        field("bert_embeddings_layernorm_beta", weights["embeddings.LayerNorm.bias"], trt.PluginFieldType.FLOAT32),
        field("bert_embeddings_layernorm_gamma", weights["embeddings.LayerNorm.weight"], trt.PluginFieldType.FLOAT32),
        field("bert_embeddings_word_embeddings", weights["embeddings.word_embeddings.weight"],
              trt.PluginFieldType.FLOAT32),
        field("bert_embeddings_token_type_embeddings", weights["embeddings.token_type_embeddings.weight"],
              trt.PluginFieldType.FLOAT32),
        field("bert_embeddings_position_embeddings", weights["embeddings.position_embeddings.weight"],
              trt.PluginFieldType.FLOAT32),
        field("output_fp16", [1], trt.PluginFieldType.INT32),
    ]
    if not varlen:
        emb_fields.append(field("mha_type_id", [int(mha_type)], trt.PluginFieldType.INT32))
    emb_plugin = _create(creators["CustomEmbLayerNormPluginDynamic"], "embeddings", emb_fields, trt)
    emb = network.add_plugin_v2(emb_inputs, emb_plugin)
    emb.name = "embeddings"
    hidden, mask_idx = emb.get_output(0), emb.get_output(1)  # (packed: the mask output is an empty dummy)
    if int8:
        rng(hidden, ranges[0]["residual"]["input"] if full else ranges[0]["input"])
        if not varlen:
            mask_idx.set_dynamic_range(-1, 1)
    mha_inputs = [mask_idx] + emb_inputs[2:] if varlen else [mask_idx]

    for i in range(spec.layers):
        p = "encoder.layer.{}.".format(i)
        r = ranges[i] if int8 else {}
        nxt = (ranges[i + 1]["residual"]["input"] if full else ranges[i + 1]["input"]) \
            if int8 and i + 1 < spec.layers else None
        w, b = interleave_qkv(weights[p + "attention.self.query.weight"], weights[p + "attention.self.key.weight"],
                              weights[p + "attention.self.value.weight"], weights[p + "attention.self.query.bias"],
                              weights[p + "attention.self.key.bias"], weights[p + "attention.self.value.bias"],
                              spec.heads)
        qkv_layer = dense(hidden, w, b, 3 * E, "l{}.qkv".format(i))
        if int8 and varlen and not int8_mha:  # the FP16 attention plugin takes FP16 only: no FP32 detour
            qkv_layer.set_output_type(0, trt.float16)
        qkv = qkv_layer.get_output(0)
        mha_fields = [field("hidden_size", [E], trt.PluginFieldType.INT32),
                      field("num_heads", [spec.heads], trt.PluginFieldType.INT32),
                      field("has_mask", [1], trt.PluginFieldType.INT32),
                      field("type_id", [int(mha_type)], trt.PluginFieldType.INT32)]
        if varlen:
            mha_fields.append(field("var_seqlen", [1], trt.PluginFieldType.INT32))
        if int8_mha:
            rng(qkv, r["qkv"])
            mha_fields.append(field("dq_probs", [r["probs_max"] / 127.0], trt.PluginFieldType.FLOAT32))
        mha_plugin = _create(creators["CustomQKVToContextPluginDynamic"], "l{}.attention".format(i), mha_fields, trt)
        mha = network.add_plugin_v2([qkv] + mha_inputs, mha_plugin)
        mha.name = "l{}.attention".format(i)
        context = mha.get_output(0)
        rng(context, r.get("context"))
        out = dense(context, weights[p + "attention.output.dense.weight"], weights[p + "attention.output.dense.bias"],
                    E, "l{}.attention_out".format(i))
        if int8 and not full:
            out.set_output_type(0, trt.float16)
        if full:  # INT8 out, into the INT8 skip-LayerNorm (MLPerf sets the same precision hint)
            out.precision = trt.int8
            rng(out.get_output(0), r["residual"]["attn_dense"])
        attn = skip_layernorm(out.get_output(0), hidden, p + "attention.output.LayerNorm", "l{}.attention_ln".format(i),
                              in_int8=full)
        rng(attn, r["residual"]["ffn_input"] if full else r.get("ffn_input"))
        mid_layer = dense(attn, weights[p + "intermediate.dense.weight"], weights[p + "intermediate.dense.bias"],
                          spec.intermediate, "l{}.ffn_in".format(i))
        if int8 and gelu_mode == "plugin":  # the GELU plugin takes FP16 (its type_id)
            mid_layer.set_output_type(0, trt.float16)
        mid = mid_layer.get_output(0)
        act = gelu(mid, "l{}.gelu".format(i))
        rng(act, r.get("gelu"))
        out = dense(act, weights[p + "output.dense.weight"], weights[p + "output.dense.bias"], E,
                    "l{}.ffn_out".format(i))
        last_int8 = full and i + 1 < spec.layers  # the last layer's output feeds the FP32 head: FP16 skip-LayerNorm
        if int8 and not last_int8:
            out.set_output_type(0, trt.float16)
        if last_int8:
            out.precision = trt.int8
            rng(out.get_output(0), r["residual"]["ffn_dense"])
        hidden = skip_layernorm(out.get_output(0), attn, p + "output.LayerNorm", "l{}.ffn_ln".format(i),
                                in_int8=last_int8)
        rng(hidden, nxt)

    if varlen:  # [CLS] of each text: the rows cu_seqlens[0:B] of [T, E, 1, 1]
        cu_seqlens = emb_inputs[2]
        count = network.add_shape(cu_seqlens).get_output(0)  # INT32 in TensorRT 8.6 (INT64 from TensorRT 10)
        if int(trt.__version__.split(".")[0]) >= 10:  # elementwise needs equal types: back to INT32
            count = network.add_cast(count, trt.int32).get_output(0)
        count = network.add_elementwise(count, const(np.ones((1,)), dtype=np.int32),
                                        trt.ElementWiseOperation.SUB).get_output(0)
        starts = network.add_slice(cu_seqlens, (0,), (1,), (1,))
        starts.set_input(2, count)
        first = network.add_gather(hidden, starts.get_output(0), 0).get_output(0)
    else:  # [CLS]: [S, B, E, 1, 1] -> [B, E, 1, 1]
        first = network.add_gather(hidden, const(np.zeros((1,)), dtype=np.int32), 0).get_output(0)
    return _classifier_head(trt, network, first, E, weights, const), keep


def _create(creator, name, fields, trt):
    """A plugin from its creator, or a one-line error where the creator refuses the fields (it returns None)."""
    plugin = creator.create_plugin(name, trt.PluginFieldCollection(fields))
    if plugin is None:
        raise PluginBackendError("TensorRT's {} plugin refused the fields for {} (run with --verbose for its "
                                 "reason); use build.backend onnx".format(creator.name, name))
    return plugin


def _emb_inputs(trt, network, input_names, seq, const):
    """[input ids, token types, mask] sequence-major: the [batch, seq] inputs (seq -1 or fixed) as the embedding
    plugin version 1 reads them."""
    inputs = {n: network.add_input(n, trt.int32, (-1, seq)) for n in input_names}
    if "input_ids" not in inputs or "attention_mask" not in inputs:
        raise PluginBackendError("the plugin network needs input_ids and attention_mask inputs (the export has {})"
                                 .format(", ".join(input_names)))
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    types = inputs.get("token_type_ids")
    if types is None:  # all-zero token types, shaped like the mask
        types = network.add_elementwise(mask, const(np.zeros((1, 1)), dtype=np.int32),
                                        trt.ElementWiseOperation.PROD).get_output(0)

    def seq_major(t):
        sh = network.add_shuffle(t)
        sh.second_transpose = (1, 0)
        return sh.get_output(0)

    return [seq_major(ids), seq_major(types), seq_major(mask)]


def _classifier_head(trt, network, first, hidden_size, weights, const):
    """[B, E, 1, 1] [CLS] rows -> pooler (tanh) and classifier in FP32 -> the `logits` output [B, labels]."""
    flat = network.add_shuffle(first)
    flat.reshape_dims = (-1, hidden_size)
    x = flat.get_output(0)

    def linear(x, w, b, name):
        mm = network.add_matrix_multiply(x, trt.MatrixOperation.NONE, const(w), trt.MatrixOperation.TRANSPOSE)
        mm.precision = trt.float32
        add = network.add_elementwise(mm.get_output(0), const(np.asarray(b).reshape(1, -1)),
                                      trt.ElementWiseOperation.SUM)
        add.precision = trt.float32
        add.name = name
        return add.get_output(0)

    pooled = network.add_activation(linear(x, weights["pooler.dense.weight"], weights["pooler.dense.bias"], "pooler"),
                                    trt.ActivationType.TANH)
    pooled.precision = trt.float32
    logits = linear(pooled.get_output(0), weights["classifier.weight"], weights["classifier.bias"], "classifier")
    logits.name = "logits"
    network.mark_output(logits)
    logits.dtype = trt.float32
    return network


def pack_varlen(feeds, max_batch=None, max_len=VARLEN_MAX_SEQUENCE):
    """[batch, seq] feeds (input_ids, attention_mask right-padded, optional token_type_ids) -> the packed inputs
    of a `build.varlen` engine: input_ids and segment_ids [total tokens], cu_seqlens [batch + 1] and max_seqlen,
    a dummy whose length is the longest text (int32). One-line error for what the engine cannot take."""
    ids = np.asarray(feeds["input_ids"])
    if "attention_mask" not in feeds:
        raise TrtbuildError("a build.varlen engine needs the attention mask to know each text's length")
    mask = np.asarray(feeds["attention_mask"]) != 0
    types = np.asarray(feeds.get("token_type_ids", np.zeros_like(ids)))
    batch, seq = ids.shape
    lengths = mask.sum(axis=1)
    if not np.array_equal(mask, np.arange(seq)[None, :] < lengths[:, None]):
        raise TrtbuildError("a build.varlen engine takes right-padded batches only (attention mask 1...1 0...0)")
    if batch == 0 or lengths.min() < 1:
        raise TrtbuildError("a build.varlen engine needs at least one token per text (got a batch with an empty one)")
    longest = int(lengths.max())
    if max_batch is not None and batch > max_batch:
        raise TrtbuildError("batch {} exceeds the engine's max batch {}; split it or rebuild with a larger "
                            "build.max_batch".format(batch, max_batch))
    if longest > max_len:
        raise TrtbuildError("a text of {} tokens exceeds the engine's longest {}; truncate it (export.max_length)"
                            .format(longest, max_len))
    cu = np.zeros(batch + 1, dtype=np.int32)
    np.cumsum(lengths, out=cu[1:])
    return {"input_ids": ids[mask].astype(np.int32), "segment_ids": types[mask].astype(np.int32),
            "cu_seqlens": cu, "max_seqlen": np.zeros(longest, dtype=np.int32)}


def varlen_feeds(engine, engine_inputs, entry):
    """For a deserialized build.varlen engine (packed inputs): (the [batch, seq] inputs its callers feed, from its
    manifest entry, and pack_varlen bound to its profile's max batch and length). None for any other engine."""
    if "cu_seqlens" not in engine_inputs:
        return None
    max_batch = int(engine.get_tensor_profile_shape("cu_seqlens", 0)[2][0]) - 1
    max_len = int(engine.get_tensor_profile_shape("max_seqlen", 0)[2][0])
    names = list(entry.get("inputs") or ("input_ids", "attention_mask", "token_type_ids"))
    return names, lambda feeds: pack_varlen(feeds, max_batch, max_len)
