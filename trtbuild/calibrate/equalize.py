"""Equalization (SmoothQuant) before INT8: move the activation outliers of each GEMM input into its weight,
exactly in FP32.

For a GEMM input X (per input channel c) feeding weights W ([in, out] MatMul initializers):

    s_c = max|X_c|^alpha / max|W_c,:|^(1 - alpha)        X W = (X / s) (s W)

`s` is folded into the weight rows; `1/s` goes where it is exact:
- "mul": a per-channel `Mul(X, 1/s)` on a branch that feeds only these GEMMs. In a post-LN BERT the
  LayerNorm output also feeds the residual Add, so its gamma/beta are never touched: the Mul sits on the
  GEMM branch only (the residual keeps reading X). The GELU output feeds only FFN-out, same Mul.
- "fold": the attention-output GEMM reads the attention context, a per-channel linear function of the V
  projection (softmax(QK^T) . V, then transpose/reshape back to channels): `1/s` is folded into V's weight
  columns and bias, and no node is added.

Measured on the default model (issue 20): one GELU-output channel of layer 4 reaches 62 where the other
1,535 stay <= 5.6, so a per-tensor int8 scale is ~10x too coarse for every other channel; equalization with
alpha 0.75-0.9 takes the Q/DQ model from 5.7 % to ~1.2 % flips against FP32, alpha 0.5 (the paper's) is
harmful because the outlier channel's weight row is also the largest. Factors are recorded in scales.json,
so `calibrate --from-scales` rebuilds the same model. onnx + numpy only.
"""

import re
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

CLASSES = ("qkv", "attn_out", "ffn_in", "ffn_out", "attention", "other")
CLASS_TITLES = {"qkv": "Q/K/V projections (input: LayerNorm output)",
                "attn_out": "attention-output dense (input: attention context)",
                "ffn_in": "FFN-in (input: attention-output LayerNorm)", "ffn_out": "FFN-out (input: GELU output)",
                "attention": "attention core (Q.K^T and P.V)", "other": "pooler / classifier / other"}
S_RANGE = (1e-4, 1e4)  # factors are clipped here: a dead channel must not get an infinite 1/s


def _consumers(graph):
    out = {}
    for n in graph.node:
        for i, name in enumerate(n.input):
            out.setdefault(name, []).append((n, i))
    return out


def _layer_of(name):
    m = re.search(r"layers?[._/](\d+)", name)
    return int(m.group(1)) if m else None


def gemm_inputs(model, plan):
    """{activation tensor: info} for each quantized activation, with its class (CLASSES), layer, the weights
    of the GEMMs it feeds ([in, out] initializers) and whether it can be equalized."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    nodes = {n.name: n for n in graph.node}
    out = {}
    for tensor, uses in plan.activations.items():
        weights, other = [], False
        for node_name, idx in uses:
            node = nodes[node_name]
            w = node.input[1 - idx] if len(node.input) >= 2 else None
            if node.op_type == "MatMul" and idx == 0 and w in inits and len(inits[w].dims) == 2:
                weights.append(w)
            else:
                other = True
        prod = producer.get(tensor)
        if prod is not None and prod.op_type == "Mul" and prod.input[-1].endswith("_smooth_inv"):
            prod = producer.get(prod.input[0])  # an equalized graph: classify by what the Mul scales
        layer = next((_layer_of(n) for n, _ in uses if _layer_of(n) is not None), None)
        if not weights:
            klass = "attention" if all(nodes[n].op_type == "MatMul" for n, _ in uses) else "other"
        else:
            d_in, d_out = (int(d) for d in inits[weights[0]].dims)
            if len(weights) >= 2:
                klass = "qkv"
            elif prod is not None and prod.op_type in ("Reshape", "Transpose"):
                klass = "attn_out"
            elif layer is None:
                klass = "other"
            elif d_out > d_in:
                klass = "ffn_in"
            elif d_in > d_out:
                klass = "ffn_out"
            else:
                klass = "other"
        # a Mul on the GEMM branch is exact even when X also feeds something else (e.g. a quantized residual Add,
        # which keeps reading X); folding into V needs the GEMM to be the context's only reader
        out[tensor] = {"class": klass, "layer": layer, "weights": weights, "other_consumers": other,
                       "equalizable": bool(weights) and klass in ("qkv", "attn_out", "ffn_in", "ffn_out"),
                       "consumers": [n for n, _ in uses]}
    return out


def _fold_target(graph, tensor, inits):
    """For the attention context: the V projection's (weight, bias) initializers when `tensor` is
    Reshape(Transpose(MatMul(P, Transpose(Reshape(Add(MatMul(x, Wv), bv)))))) with every link used once; else None."""
    producer = {o: n for n in graph.node for o in n.output}
    cons = _consumers(graph)

    def only(name, op):
        n = producer.get(name)
        if n is None or n.op_type != op:
            return None
        return n

    def single_use(name):
        return len(cons.get(name, [])) == 1

    def perm(node):
        return next((list(a.ints) for a in node.attribute if a.name == "perm"), None)

    if not single_use(tensor):  # every reader of the context would see context / s
        return None
    r1 = only(tensor, "Reshape")
    t1 = r1 is not None and single_use(r1.input[0]) and only(r1.input[0], "Transpose")
    if not t1 or perm(t1) != [0, 2, 1, 3]:
        return None
    pv = single_use(t1.input[0]) and only(t1.input[0], "MatMul")
    if not pv or not single_use(pv.input[1]):
        return None
    t2 = only(pv.input[1], "Transpose")
    if t2 is None or perm(t2) != [0, 2, 1, 3] or not single_use(t2.input[0]):
        return None
    r2 = only(t2.input[0], "Reshape")
    if r2 is None or not single_use(r2.input[0]):
        return None
    add = only(r2.input[0], "Add")
    if add is None:
        return None
    def constant_1d(name):  # an initializer, or an Identity of one (exporters dedup equal biases that way)
        if name in inits:
            return name if len(inits[name].dims) == 1 else None
        ident = producer.get(name)
        if ident is not None and ident.op_type == "Identity" and ident.input[0] in inits:
            return ident.input[0] if len(inits[ident.input[0]].dims) == 1 else None
        return None

    bias_input = next((i for i in add.input if constant_1d(i)), None)
    bias = constant_1d(bias_input) if bias_input else None
    mm_out = next((i for i in add.input if i != bias_input), None)
    if bias is None or mm_out is None or not single_use(mm_out):
        return None
    mm = only(mm_out, "MatMul")
    if mm is None or mm.input[1] not in inits or len(inits[mm.input[1]].dims) != 2:
        return None
    # shared initializers (an exporter dedups identical ones, e.g. all-zero biases) get a private copy when applied
    return {"weight": mm.input[1], "bias": bias, "bias_input": bias_input, "matmul": mm.name, "add": add.name}


@dataclass
class Equalization:
    """One equalized GEMM input: its factors s (one per input channel) and where 1/s went."""

    tensor: str  # the GEMM input in the exported graph
    klass: str
    layer: Optional[int]
    alpha: float
    mode: str  # "mul" | "fold"
    factors: np.ndarray  # float32 [channels]
    weights: List[str]  # the GEMM weights scaled by s (rows)
    fold: Optional[Dict[str, str]] = None  # mode "fold": the V projection's weight and bias

    @property
    def quantized_tensor(self):
        """The tensor the GEMMs read after equalization (it gets the Q/DQ pair)."""
        return self.tensor + "_smoothed" if self.mode == "mul" else self.tensor

    def to_dict(self):
        return {"tensor": self.tensor, "class": self.klass, "layer": self.layer, "alpha": self.alpha, "mode": self.mode,
                "weights": list(self.weights), "fold": self.fold, "channels": int(self.factors.size),
                "factor_min": float(self.factors.min()), "factor_max": float(self.factors.max()),
                "factors": [float(v) for v in self.factors]}

    @classmethod
    def from_dict(cls, d):
        factors = np.asarray(d["factors"], dtype=np.float32)
        if factors.ndim != 1 or not np.all(np.isfinite(factors)) or np.any(factors <= 0):
            raise ValueError("equalization factors of {} must be finite and > 0".format(d.get("tensor")))
        return cls(tensor=d["tensor"], klass=d.get("class", "other"), layer=d.get("layer"), alpha=float(d["alpha"]),
                   mode=d["mode"], factors=factors, weights=list(d["weights"]), fold=d.get("fold"))


def weight_row_max(model, names):
    """max |W[c, :]| over the rows of each named [in, out] initializer, then over the names: float64 [in]."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    rows = [np.abs(numpy_helper.to_array(inits[n]).astype(np.float64)).max(axis=1) for n in names]
    return np.max(rows, axis=0)


def factors_for(act_max, w_max, alpha):
    """SmoothQuant's s = max|X|^alpha / max|W|^(1-alpha), clipped to S_RANGE; 1 where a channel never fired."""
    a = np.asarray(act_max, dtype=np.float64)
    w = np.maximum(np.asarray(w_max, dtype=np.float64), 1e-8)
    s = np.where(a > 0, np.power(np.maximum(a, 1e-8), alpha) / np.power(w, 1.0 - alpha), 1.0)
    return np.clip(s, *S_RANGE).astype(np.float32)


def plan_equalization(model, inputs, channel_max, alphas):
    """Equalizations for every equalizable GEMM input with a per-channel max: `alphas` maps a tensor to its alpha
    (tensors missing from it are not equalized). `inputs` is gemm_inputs(model, plan)."""
    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for tensor, info in sorted(inputs.items()):
        if not info["equalizable"] or tensor not in channel_max or alphas.get(tensor) is None:
            continue
        w_max = weight_row_max(model, info["weights"])
        if w_max.shape != np.shape(channel_max[tensor]):
            continue
        alpha = float(alphas[tensor])
        fold = None
        if info["class"] == "attn_out" and not info.get("other_consumers"):
            fold = _fold_target(model.graph, tensor, inits)
        out.append(Equalization(tensor=tensor, klass=info["class"], layer=info["layer"], alpha=alpha,
                                mode="fold" if fold else "mul", factors=factors_for(channel_max[tensor], w_max, alpha),
                                weights=list(info["weights"]),
                                fold=fold))
    return out


def apply_equalization(model, equalizations):
    """A copy of `model` with each equalization applied (weights scaled, 1/s as a Mul or folded into V)."""
    import onnx
    from onnx import helper, numpy_helper

    eq_model = onnx.ModelProto()
    eq_model.CopyFrom(model)
    graph = eq_model.graph
    inits = {i.name: i for i in graph.initializer}

    nodes = {n.name: n for n in graph.node}
    uses = {}
    for n in graph.node:
        for name in n.input:
            uses[name] = uses.get(name, 0) + 1

    def rescale(name, fn, node_names):
        """Scale an initializer in place, or a private copy of it when nodes other than `node_names` read it."""
        arr = numpy_helper.to_array(inits[name]).astype(np.float32)
        readers = [n for n in node_names if n in nodes]
        if uses.get(name, 0) > sum(list(nodes[n].input).count(name) for n in readers):
            new = "{}_eq_{}".format(name, len(inits))
            graph.initializer.append(numpy_helper.from_array(fn(arr).astype(np.float32), new))
            inits[new] = graph.initializer[-1]
            for n in readers:
                for i, inp in enumerate(nodes[n].input):
                    if inp == name:
                        nodes[n].input[i] = new
                        uses[name] -= 1
                        uses[new] = uses.get(new, 0) + 1
            return
        inits[name].CopyFrom(numpy_helper.from_array(fn(arr).astype(np.float32), name))

    mul_before = {}  # first consumer node name -> [Mul nodes to insert before it]
    for eq in equalizations:
        s = eq.factors.astype(np.float32)
        weights = list(dict.fromkeys(eq.weights))  # a weight two GEMMs share is scaled once
        gemms = [n.name for n in graph.node
                 if n.op_type == "MatMul" and len(n.input) == 2 and n.input[0] == eq.tensor and n.input[1] in weights]
        if not gemms:
            raise ValueError("no GEMM reads {} with the weights {}".format(eq.tensor, eq.weights))
        for w in weights:
            rescale(w, lambda a: a * s[:, None], gemms)
        if eq.mode == "fold":
            mm, add = nodes[eq.fold["matmul"]], nodes[eq.fold["add"]]
            rescale(mm.input[1], lambda a: a / s[None, :], [mm.name])  # its current name (an earlier copy, maybe)
            idx = next(i for i, inp in enumerate(add.input) if inp != mm.output[0])
            if add.input[idx] in inits:
                rescale(add.input[idx], lambda a: a / s, [add.name])
            else:  # the Add reads an Identity of a shared bias: give it its own
                arr = numpy_helper.to_array(inits[eq.fold["bias"]]).astype(np.float32) / s
                new = "{}_eq_{}".format(eq.fold["bias"], len(inits))
                graph.initializer.append(numpy_helper.from_array(arr.astype(np.float32), new))
                inits[new] = graph.initializer[-1]
                add.input[idx] = new
            continue
        inv_name = eq.tensor.replace("/", "_").replace(":", "_").strip("_") + "_smooth_inv"
        graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv_name))
        out = eq.quantized_tensor
        mul = helper.make_node("Mul", [eq.tensor, inv_name], [out], name=inv_name.replace("_inv", "_Mul"))
        for name in gemms:  # rewired by node, whatever its weight is called now
            nodes[name].input[0] = out
        mul_before.setdefault(gemms[0], []).append(mul)
    if mul_before:
        nodes = []
        for node in graph.node:
            nodes += mul_before.get(node.name, [])
            nodes.append(node)
        del graph.node[:]
        graph.node.extend(nodes)
    return eq_model


def equalizations_from_scales(scales):
    """The equalizations a scales.json records ([] when it has none)."""
    record = scales.get("equalization") or {}
    if not isinstance(record, dict) or not isinstance(record.get("tensors", []), list):
        raise ValueError("its equalization record is malformed")
    return [Equalization.from_dict(d) for d in record.get("tensors", [])]


def local_error(x, weights, s, amax):
    """Relative output error of an int8 GEMM (per-tensor activation with this amax after division by s, per-channel
    weights, symmetric) on sample rows x [n, in]: sum ||XW - Q(X/s) Q(sW)||^2 / sum ||XW||^2 over the weights."""
    xs = x / s[None, :]
    step = max(float(amax), 1e-12) / 127.0
    xq = (np.clip(np.round(xs / step), -127, 127) * step).astype(np.float32)
    num = den = 0.0
    for w in weights:
        ref = x @ w
        ws = w * s[:, None]
        wstep = (np.maximum(np.abs(ws).max(axis=0), 1e-12) / 127.0).astype(np.float32)
        wq = np.clip(np.round(ws / wstep[None, :]), -127, 127) * wstep[None, :]
        err = ref - xq @ wq
        num += float(np.square(err, dtype=np.float64).sum())
        den += float(np.square(ref, dtype=np.float64).sum())
    return num / max(den, 1e-30)


def search_alpha(sample, weights, act_max, w_max, grid):
    """AWQ-style local search on calibration rows: the alpha of `grid` (or None: no equalization) whose int8 GEMM
    output is closest to FP32 on `sample`; returns (best, {alpha or "off": relative error})."""
    weights = [np.asarray(w, dtype=np.float32) for w in weights]
    x = np.asarray(sample, dtype=np.float32)
    act_max = np.asarray(act_max, dtype=np.float64)
    errors = {"off": local_error(x, weights, np.ones(x.shape[1], dtype=np.float32), act_max.max())}
    for a in grid:
        s = factors_for(act_max, w_max, a)
        errors[float(a)] = local_error(x, weights, s, (act_max / s).max())
    best = min(errors, key=errors.get)
    return (None if best == "off" else best), errors


def outliers(channel_max):
    """Outlier channels of a per-channel max |x|: the ratio max / median and the top channels above 4x the median."""
    m = np.asarray(channel_max, dtype=np.float64)
    med = float(np.median(m)) or 1e-12
    top = np.argsort(-m)[:5]
    return {"max": float(m.max()), "median": float(med), "ratio": float(m.max() / med),
            "channels": [{"channel": int(c), "max": float(m[c])} for c in top if m[c] > 4 * med]}
