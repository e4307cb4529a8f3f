"""ONNX Runtime on the CPU: the FP32 baseline, Q/DQ candidates, calibration statistics; and what an ONNX holds.

Runners share one interface: `infer(feeds) -> logits` (numpy), `input_names`, `device`, `close()`, and
they are context managers (TensorRT's runner in `trtbuild.backends.trt.runner` is the other one).
"""

from trtbuild._util import first_line
from trtbuild.errors import TrtbuildError


def ort_session(model, threads=None, basic_optimizations=False):
    """A quiet CPU ONNX Runtime session for a path or serialized bytes. `basic_optimizations` keeps
    ORT from fusing away intermediate tensors (calibration reads them as extra outputs)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if basic_optimizations:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


class OrtRunner:
    """`path`: an ONNX file, or a serialized model (bytes) such as a Q/DQ variant built in memory."""

    def __init__(self, path, threads=None):
        self.path = path if isinstance(path, str) else "<in-memory ONNX>"
        try:
            self.session = ort_session(path, threads)
        except Exception as e:  # not an ONNX file, or one ONNX Runtime cannot load
            raise TrtbuildError("{}: ONNX Runtime cannot load it ({})".format(self.path, first_line(e)[:200])) from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if "logits" not in outputs:
            raise TrtbuildError("{} has no output named 'logits' (outputs: {}); pass a trtbuild export or a build "
                                "of one".format(self.path, ", ".join(outputs)))
        self.device = "CPU (ONNX Runtime {})".format(__import__("onnxruntime").__version__)

    def infer(self, feeds):
        return self.session.run(["logits"], {n: feeds[n] for n in self.input_names})[0]

    def close(self):
        self.session = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load_onnx(path, rerun):
    """onnx.load of a work-directory model; a one-line error saying what to re-run when it is not a model."""
    import onnx

    try:
        model = onnx.load(path)
    except Exception as e:  # protobuf's DecodeError and friends
        raise TrtbuildError("{} is not a readable ONNX model ({}); re-run `{}`".format(path, first_line(e)[:120],
                                                                                      rerun)) from None
    if not model.graph.node:
        raise TrtbuildError("{} holds no graph (empty or truncated); re-run `{}`".format(path, rerun))
    return model


def inspect_onnx(path):
    """Opset, inputs, outputs, op counts and Q/DQ pairs of an ONNX file (its external data is not read)."""
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and friends
        raise TrtbuildError("{} is not a readable ONNX file ({})".format(path, first_line(e))) from None
    if not model.graph.node or not model.graph.output:  # an empty file parses as an empty model
        raise TrtbuildError("{} is not an ONNX model (no graph: empty, truncated or another kind of file)".format(path))
    ops = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {"kind": "onnx",
            "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
            "inputs": [{"name": i.name, "dims": [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim],
                        "dtype": onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type)} for i in model.graph.input],
            "outputs": [o.name for o in model.graph.output], "nodes": len(model.graph.node),
            "ops": dict(sorted(ops.items())), "qdq_pairs": ops.get("QuantizeLinear", 0)}
