"""The FP16-cast ONNX that strongly typed TensorRT builds need (TensorRT 11 has no FP16 builder flag: a
network's types are its ONNX's types).

Made with onnxconverter-common's `convert_float_to_float16` (Microsoft's converter, the one ONNX Runtime's own
transformer tools use): inputs and outputs keep their types, and the ops the library blocks by default stay FP32,
plus LayerNormalization, Softmax and the reductions (their FP32 accumulation is what keeps BERT accurate in FP16,
as TensorRT's own FP16 engines do) and Q/DQ (their scales stay FP32). `verify --candidate fp16-onnx` measures the
cast model in ONNX Runtime on the CPU, so its accuracy is known before any GPU.
"""

import os

from trtbuild.errors import MissingDependencyError

FP32_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "ReduceMax", "Pow", "Sqrt",
            "QuantizeLinear", "DequantizeLinear")


def cast_fp16(model):
    """A copy of an ONNX ModelProto with its float tensors in FP16 except FP32_OPS (and the library's own
    block list); deterministic."""
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise MissingDependencyError("the FP16-cast ONNX needs onnxconverter-common: pip install "
                                     "onnxconverter-common (it is in requirements.txt)") from None
    import warnings

    block = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS))
    with warnings.catch_warnings():  # it warns for every constant it clamps into FP16's range
        warnings.simplefilter("ignore", UserWarning)
        prepared = _split_shared_initializers(_without_initializer_identities(model), set(block))
        return float16.convert_float_to_float16(prepared, keep_io_types=True, op_block_list=block)


def _split_shared_initializers(model, block):
    """Give the FP32 (blocked) nodes their own copy of an initializer they share with FP16 nodes (the exporter
    shares equal constants, e.g. zero biases): the converter would type the one tensor both ways. In place."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    users = {}
    for node in graph.node:
        for name in node.input:
            if name in inits:
                users.setdefault(name, []).append(node)
    for name, nodes in users.items():
        kinds = {n.op_type in block for n in nodes}
        if len(kinds) < 2:
            continue
        for k, node in enumerate(n for n in nodes if n.op_type in block):
            copy = type(inits[name])()
            copy.CopyFrom(inits[name])
            copy.name = "{}_fp32_{}".format(name, k)
            graph.initializer.append(copy)
            for i, inp in enumerate(node.input):
                if inp == name:
                    node.input[i] = copy.name
    return model


def _without_initializer_identities(model):
    """A copy whose Identity nodes on initializers (the exporter's way to share a weight) are gone, their
    consumers reading the initializer itself: the converter types such an Identity's output FP16 while its
    consumers may stay FP32 (an invalid model)."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias = {n.output[0]: n.input[0] for n in graph.node
             if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs}
    if not alias:
        return out
    kept = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del graph.node[:]
    graph.node.extend(kept)
    return out


def write_fp16_onnx(src, dst):
    """Cast the ONNX file `src` into `dst` (written under a temp name and renamed); returns `dst`."""
    import onnx

    cast = cast_fp16(onnx.load(src))
    onnx.checker.check_model(cast)
    tmp = "{}.{}.tmp".format(dst, os.getpid())
    try:
        onnx.save(cast, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dst
