"""Q/DQ placement and the Q/DQ ONNX writer: which tensors get QuantizeLinear -> DequantizeLinear pairs, with
which scales, and rebuilding model.qdq.onnx from model.onnx + scales.json alone.

The placement TensorRT fuses well, after ModelOpt's ONNX PTQ:
- MatMul / Gemm with a weight initializer: the activation input gets a per-tensor symmetric
  QuantizeLinear -> DequantizeLinear pair (int8, zero point 0); the weight stays FP32 behind its
  own Q -> DQ pair, per output channel, symmetric (TensorRT 8.6 cannot build int8 weight initializers).
- the attention core (both inputs of Q.K^T and P.V) with `calibrate.quantize_attention` (the default).
- residual Add (the Add before each LayerNorm whose inputs are a sublayer output and the previous
  LayerNorm's output): with `calibrate.quantize_residual` both inputs are quantized, so TensorRT can
  fuse the add into the int8 GEMM. Off by default: measured on the default model (400 eval texts,
  ONNX Runtime), residual Q/DQ cost 20 points of accuracy with entropy scales (58.3 % vs 78.8 %) and 5
  with minmax (78.0 % vs 82.8 %); the BERT residual stream carries outlier channels (|x| up to 208
  where the bulk is < 20) that per-tensor int8 cannot hold.
- LayerNorm, Softmax and GELU stay float (FP16 in the engine). `--exclude` takes node-name patterns
  (fnmatch) to keep more in float.
One Q/DQ pair per tensor, shared by all its quantized consumers. Only onnx and numpy are needed here
(`qdq_from_scales` runs under the GPU side's Python 3.9).
"""

import fnmatch
import glob
import os
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np

from trtbuild import __version__
from trtbuild._util import Result, first_line, noop
from trtbuild.calibrate.equalize import apply_equalization, equalizations_from_scales
from trtbuild.errors import TrtbuildError
from trtbuild.workdir import CACHE_NAME, COVERAGE_HTML, COVERAGE_JSON, FP8_NAME, QDQ_NAME, SCALES_NAME, SENSITIVITY_HTML, \
    SENSITIVITY_JSON, \
    StagedOutputs, WorkDir, atomic_write_json, atomic_write_text, check_amax, check_export, locked, read_scales, \
    sha256_file



@dataclass
class QdqPlan:
    """Which tensors get Q/DQ: activations per tensor, weights per channel, and who consumes them."""

    activations: Dict[str, List[Tuple[str, int]]] = field(default_factory=dict)  # tensor -> [(node, input idx)]
    weights: Dict[str, Tuple[int, List[Tuple[str, int]]]] = field(default_factory=dict)  # init -> (axis, consumers)
    quantized_nodes: List[str] = field(default_factory=list)
    excluded_nodes: List[str] = field(default_factory=list)

    def to_dict(self):
        return {"activations": sorted(self.activations), "weights": {k: v[0] for k, v in sorted(self.weights.items())},
                "quantized_nodes": self.quantized_nodes, "excluded_nodes": self.excluded_nodes}


def plan_qdq(model, exclude=(), quantize_residual=False, quantize_attention=False):
    """Decide the Q/DQ placement for an exported BERT graph (see the module docstring)."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers = {}
    for n in graph.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))
    plan = QdqPlan()

    def excluded(node):
        return any(fnmatch.fnmatchcase(node.name, pat) for pat in exclude)

    def add_act(tensor, node, idx):
        plan.activations.setdefault(tensor, []).append((node.name, idx))

    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Add"):
            continue
        if node.op_type == "Add":
            if not quantize_residual or len(node.input) != 2 or any(i in inits for i in node.input):
                continue
            if not any(c.op_type == "LayerNormalization" for c, _ in consumers.get(node.output[0], [])):
                continue
            if not any(producer.get(i) is not None and producer[i].op_type == "LayerNormalization"
                       for i in node.input):
                continue  # the embeddings' sum: not a residual connection
        if excluded(node):
            plan.excluded_nodes.append(node.name)
            continue
        ins = list(node.input[:2])
        if node.op_type in ("MatMul", "Gemm"):
            weights = [i for i, name in enumerate(ins) if name in inits]
            if not weights and not quantize_attention:
                continue  # the attention core (Q.K^T, P.V) stays float
            if any(len(inits[ins[i]].dims) != 2 for i in weights):
                continue
            for i, name in enumerate(ins):
                if name in inits:
                    if node.op_type == "Gemm":
                        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
                        axis = 0 if (i == 1 and trans_b) else 1
                    else:
                        axis = 1  # MatMul weight [in, out]: one scale per output column
                    plan.weights.setdefault(name, (axis, []))[1].append((node.name, i))
                else:
                    add_act(name, node, i)
            plan.quantized_nodes.append(node.name)
        else:  # residual Add
            for i, name in enumerate(ins):
                add_act(name, node, i)
            plan.quantized_nodes.append(node.name)
    return plan


def plan_for(model, exclude, ccfg):
    """plan_qdq with the placement switches of a CalibrateConfig."""
    return plan_qdq(model, exclude=exclude, quantize_residual=ccfg.quantize_residual,
                    quantize_attention=ccfg.quantize_attention)


def weight_amax(model, plan):
    """Per-channel max |w| of every quantized weight: {name: float32 array}."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for name, (axis, _) in plan.weights.items():
        w = numpy_helper.to_array(inits[name]).astype(np.float32)
        reduce_axis = 1 - axis
        out[name] = np.abs(w).max(axis=reduce_axis).astype(np.float32)
    return out


QMAX = {"int8": 127.0, "fp8": 448.0}  # the largest value of the format: INT8, FP8 E4M3 (FLOAT8E4M3FN)
FP8_OPSET = 19  # QuantizeLinear / DequantizeLinear with FLOAT8E4M3FN zero points


def _scale(amax, fmt="int8"):
    return (np.maximum(np.asarray(amax, dtype=np.float32), np.float32(1e-12)) / np.float32(QMAX[fmt])).astype(
        np.float32)


def build_qdq_model(model, plan, act_amax, w_amax, fmt="int8"):
    """A copy of `model` with QuantizeLinear -> DequantizeLinear pairs inserted per the plan. fmt int8: symmetric
    INT8 (zero point 0, scale amax / 127); fp8: FP8 E4M3 (FLOAT8E4M3FN zero point, scale amax / 448) in a copy
    converted to opset 19, the same placement and amax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    qdq = onnx.ModelProto()
    qdq.CopyFrom(model)
    if fmt == "fp8":
        from onnx import version_converter

        qdq = version_converter.convert_version(qdq, FP8_OPSET)
    graph = qdq.graph
    new_inits = []
    rewire = {}  # (node name, input idx) -> dq tensor
    pending = {}  # tensor -> [Q node, DQ node] to emit before its first consumer

    def pair(tensor, scale, axis=None):
        safe = tensor.replace("/", "_").replace(":", "_").strip("_")
        s_name, z_name = safe + "_scale", safe + "_zero_point"
        q_out, dq_out = tensor + "_quantized", tensor + "_dequantized"
        new_inits.append(numpy_helper.from_array(np.asarray(scale, dtype=np.float32), s_name))
        if fmt == "fp8":
            shape = list(np.shape(scale))
            new_inits.append(helper.make_tensor(z_name, TensorProto.FLOAT8E4M3FN, shape, [0] * int(np.prod(shape))))
        else:
            new_inits.append(numpy_helper.from_array(np.zeros(np.shape(scale), dtype=np.int8), z_name))
        kwargs = {} if axis is None else {"axis": axis}
        q = helper.make_node("QuantizeLinear", [tensor, s_name, z_name], [q_out], name=safe + "_QuantizeLinear", **kwargs)
        dq = helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out], name=safe + "_DequantizeLinear",
                              **kwargs)
        pending[tensor] = [q, dq]
        return dq_out

    for tensor, uses in plan.activations.items():
        dq_out = pair(tensor, _scale(act_amax[tensor], fmt))
        for use in uses:
            rewire[use] = dq_out
    for name, (axis, uses) in plan.weights.items():
        dq_out = pair(name, _scale(w_amax[name], fmt), axis=axis)
        for use in uses:
            rewire[use] = dq_out

    nodes = []
    emitted = set()
    graph_inputs = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    for tensor in list(pending):
        if tensor in graph_inputs:  # weights and graph inputs: their Q/DQ can go first
            nodes += pending[tensor]
            emitted.add(tensor)
    for node in graph.node:
        for idx, name in enumerate(node.input):
            if (node.name, idx) in rewire and name not in emitted:
                nodes += pending[name]
                emitted.add(name)
        for idx in range(len(node.input)):
            if (node.name, idx) in rewire:
                node.input[idx] = rewire[(node.name, idx)]
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    return qdq


def trt_cache_header(version="8.6.0"):
    """The first line of TensorRT's calibration cache for a version: TRT-<NV_TENSORRT_VERSION>-EntropyCalibration2,
    that number being major*1000 + minor*100 + patch up to 8.x and major*10000 + minor*100 + patch from 10."""
    major, minor, patch = (int(p) for p in (str(version).split(".") + ["0", "0"])[:3])
    number = (major * 10000 if major >= 10 else major * 1000) + minor * 100 + patch
    return "TRT-{}-EntropyCalibration2".format(number)


def trt_calibration_cache(act_amax, header="TRT-8600-EntropyCalibration2"):
    """A TensorRT (<= 10) calibration cache: `name: big-endian float32 scale in hex` per tensor."""
    lines = [header]
    for name in sorted(act_amax):
        scale = max(float(act_amax[name]), 1e-12) / 127.0
        lines.append("{}: {}".format(name, struct.pack(">f", scale).hex()))
    return "\n".join(lines) + "\n"


def exact(name):
    """An fnmatch pattern that matches exactly this node name."""
    return glob.escape(name)


CALIBRATE_FORMAT = "trtbuild-calibrate/1"


def scales_document(base, plan, exclude, ccfg, act_amax, w_amax, stats):
    """scales.json: `base` (method, histogram, corpus, onnx hash) + the placement and a record per tensor."""
    scales = dict(base)
    scales["placement"] = {"quantize_residual": ccfg.quantize_residual,
                           "quantize_attention": ccfg.quantize_attention, "exclude": list(exclude)}
    scales["activations"] = {name: {"amax": check_amax(name, act_amax[name], "calibration"),
                                    "scale": act_amax[name] / 127.0, "max_abs": stats[name][0],
                                    "count": stats[name][1], "consumers": [n for n, _ in plan.activations[name]]}
                             for name in sorted(plan.activations)}
    scales["weights"] = {name: {"axis": axis, "channels": int(w_amax[name].size), "amax_max": float(w_amax[name].max()),
                                "amax_min": float(w_amax[name].min())} for name, (axis, _) in sorted(plan.weights.items())}
    scales["quantized_nodes"] = plan.quantized_nodes
    scales["excluded_nodes"] = plan.excluded_nodes
    return scales


def write_calibration(wd, model, plan, scales, inputs, coverage=None, trt_cache=False, keep=(), qmodel=None,
                      sensitivity=None, fp8=False, trt_version="8.6.0"):
    """Stage model.qdq.onnx, scales.json (+ coverage.json/.html, the TensorRT cache) and commit them as one unit
    with calibrate.json (its `inputs`: the hashes they were made from) written last. Outputs of an earlier
    calibrate that this one does not make are removed, unless named in `keep`. `qmodel`: the graph the plan is
    for (the equalized one), default `model`. `fp8`: model.fp8.onnx too (the same scales as FP8 E4M3 Q/DQ)."""
    import onnx

    qmodel = model if qmodel is None else qmodel
    act_amax = {name: a["amax"] for name, a in scales["activations"].items()}
    w_amax = weight_amax(qmodel, plan)
    qdq = build_qdq_model(qmodel, plan, act_amax, w_amax)
    onnx.checker.check_model(qdq)
    with StagedOutputs(wd.root, "calibrate") as staged:
        onnx.save(qdq, staged.path(QDQ_NAME))
        if fp8:
            fp8_model = build_qdq_model(qmodel, plan, act_amax, w_amax, fmt="fp8")
            onnx.checker.check_model(fp8_model)
            onnx.save(fp8_model, staged.path(FP8_NAME))
        atomic_write_json(staged.path(SCALES_NAME), scales)
        if coverage is not None:
            from trtbuild.calibrate.coverage import write_coverage

            write_coverage(coverage, staged.dir)
        if trt_cache:
            atomic_write_text(staged.path(CACHE_NAME), trt_calibration_cache(act_amax, trt_cache_header(trt_version)))
        if sensitivity is not None:
            from trtbuild.calibrate.report import sensitivity_html

            atomic_write_json(staged.path(SENSITIVITY_JSON), sensitivity)
            atomic_write_text(staged.path(SENSITIVITY_HTML), sensitivity_html(sensitivity))
        record = {"format": CALIBRATE_FORMAT, "trtbuild": __version__, "inputs": inputs,
                  "placement": scales["placement"], "quantized_nodes": len(plan.quantized_nodes)}
        clear = [n for n in (CACHE_NAME, COVERAGE_JSON, COVERAGE_HTML, SENSITIVITY_JSON, SENSITIVITY_HTML) +
                 (() if fp8 else (FP8_NAME,)) if n not in keep]  # (an FP8 model of older scales would be stale)
        if keep:
            record["outputs"] = {n: sha256_file(wd.path(n)) for n in keep if os.path.isfile(wd.path(n))}
        staged.commit(wd.calibrate_json, record, clear=clear)
    return wd.qdq_onnx


class QdqRebuilt(Result):
    """`calibrate --from-scales`: the Q/DQ ONNX rebuilt from model.onnx + scales.json."""

    def __init__(self, qdq_onnx, scales, activations, weights):
        self.qdq_onnx, self.scales, self.activations, self.weights = qdq_onnx, scales, activations, weights

    def to_dict(self):
        return {"qdq_onnx": self.qdq_onnx, "scales": self.scales, "activations": self.activations,
                "weights": self.weights}

    def summary(self):
        return self.qdq_onnx


def qdq_from_scales(workdir, progress=noop, fp8=False):
    """Rebuild model.qdq.onnx (and with `fp8` model.fp8.onnx) from model.onnx + scales.json (no corpus, no ONNX
    Runtime): the scales are the portable artifact; this needs only onnx + numpy (it runs under the GPU side's
    Python 3.9)."""
    from trtbuild.backends.ort import load_onnx

    wd = WorkDir(workdir)
    with locked(wd.root, create=False):
        record = check_export(wd.root)
        scales = read_scales(wd, record)
        model = load_onnx(wd.onnx, "trtbuild export CHECKPOINT -o {} --force".format(wd.root))
        placement = scales["placement"]
        try:
            equalizations = equalizations_from_scales(scales)
            qmodel = apply_equalization(model, equalizations) if equalizations else model
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise TrtbuildError("{}: its equalization record does not fit {} ({}); run `trtbuild calibrate {}`".format(
                wd.scales, wd.onnx, first_line(e), wd.root))
        plan = plan_qdq(qmodel, exclude=tuple(placement.get("exclude", ())),
                        quantize_residual=placement.get("quantize_residual", False),
                        quantize_attention=placement.get("quantize_attention", False))
        if sorted(plan.activations) != sorted(scales["activations"]):
            raise TrtbuildError("{} does not match the Q/DQ placement of {}; run `trtbuild calibrate {}`".format(
                wd.scales, wd.onnx, wd.root))
        inputs = {"onnx": record["sha256"]["onnx"], "tokenizer": record["sha256"].get("tokenizer"),
                  "scales": sha256_file(wd.scales), "from_scales": True}
        write_calibration(wd, model, plan, scales, inputs, qmodel=qmodel, fp8=fp8,
                          keep=(COVERAGE_JSON, COVERAGE_HTML, CACHE_NAME, SENSITIVITY_JSON, SENSITIVITY_HTML))
    progress("rebuilt {}{} from {} ({} activations, {} weights)".format(
        wd.qdq_onnx, " and " + wd.fp8_onnx if fp8 else "", wd.scales, len(scales["activations"]), len(plan.weights)))
    return QdqRebuilt(wd.qdq_onnx, wd.scales, len(scales["activations"]), len(plan.weights))
