"""The plugins backend's network definition against strict stand-ins of the TensorRT versions users install,
made from the real bindings wheels' API surfaces (make_surface.py): 8.6.1 and 10.13 build every path, 11.4 is
refused in one line. The stand-ins themselves raise where the real bindings would."""

import pytest

from trt_api.strict import VERSIONS, StrictTrt
from trtbuild.backends.trt.plugins import PluginBackendError, layer_ranges, load_bert, plugin_network

PATHS = [("fp16", False, "gemm", [64, 128]), ("int8", False, "gemm", [128]), ("fp16", True, "gemm", [128]),
         ("int8", True, "gemm", [128]), ("int8", True, "attention", [128]), ("int8", True, "full", [128])]


def _scales(layers):
    acts = {"emb": {"amax": 4.0, "consumers": ["/bert/encoder/layer.0/attention/self/query/MatMul"]}}
    for i in range(layers):
        p = "/bert/encoder/layer.{}/".format(i)
        for tensor, consumer, amax in (("ctx", "attention/output/dense/MatMul", 2.0),
                                       ("ln1", "intermediate/dense/MatMul", 19.0),
                                       ("gelu", "output/dense/MatMul", 33.0),
                                       ("attention/self/Transpose_output_0", "attention/self/MatMul", 7.0),
                                       ("attention/self/Transpose_1_output_0", "attention/self/MatMul_1", 2.0),
                                       ("attention/self/Softmax_output_0", "attention/self/MatMul_1", 1.0),
                                       ("attention/output/dense/Add_output_0", "attention/output/Add", 9.0),
                                       ("output/dense/Add_output_0", "output/Add", 11.0)):
            acts[p + tensor] = {"amax": amax, "max_abs": amax * 2, "consumers": [p + consumer]}
        if i + 1 < layers:
            acts[p + "ln2"] = {"amax": 5.5, "consumers": ["/bert/encoder/layer.{}/attention/self/query/MatMul".format(
                i + 1)]}
    return {"activations": acts}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("precision, varlen, scope, buckets", PATHS)
def test_plugin_network_per_tensorrt_version(tiny_checkpoint, version, precision, varlen, scope, buckets):
    spec, w = load_bert(tiny_checkpoint)
    spec.head_size, spec.hidden = 64, 768  # shapes do not matter to the stand-in; the INT8 kernels' limits do
    trt = StrictTrt(version)
    logger = trt.Logger(trt.Logger.ERROR)
    ranges = layer_ranges(_scales(spec.layers), spec.layers) if precision == "int8" else None
    run = lambda: plugin_network(trt, trt.Builder(logger), spec, w, ["input_ids", "attention_mask"], precision,  # noqa
                                 buckets, ranges, logger, varlen=varlen, int8_scope=scope)
    if version.startswith("11."):
        with pytest.raises(PluginBackendError, match=r"TensorRT 11\.4\.0 removed .*: use build.backend onnx"):
            run()
        return
    network, keep = run()
    names = [m for _, m, _, _ in trt.calls]
    assert names.count("mark_output") == 1 and keep
    # 10.x: shape tensors are INT64, cast back before the INT32 arithmetic of the [CLS] gather
    assert ("add_cast" in names) == (varlen and not version.startswith("8."))
    assert ("add_fully_connected" in names) == (precision == "fp16" and version.startswith("8."))


@pytest.mark.parametrize("version", VERSIONS)
def test_the_stand_in_is_strict(version):
    trt = StrictTrt(version)
    network = trt.Builder(trt.Logger(trt.Logger.WARNING)).create_network(0)
    x = network.add_input("x", trt.float32, (1, 4))
    layer = network.add_activation(x, trt.ActivationType.RELU)
    layer.name = "relu"  # a writable property
    with pytest.raises(AttributeError, match="read-only"):
        layer.num_inputs = 2
    with pytest.raises(AttributeError, match="no attribute 'add_frobnicate'"):
        network.add_frobnicate(x)
    with pytest.raises(TypeError, match="fits no signature"):
        network.add_activation(x, trt.ActivationType.RELU, alpha=1.0)  # no such keyword
    with pytest.raises(TypeError, match="fits no signature"):
        network.add_activation(trt.float16, trt.ActivationType.RELU)  # a DataType where an ITensor goes
    assert int(trt.float16) == 1 and int(trt.int8) == 2
    assert hasattr(network, "add_fully_connected") == version.startswith("8.")
    assert hasattr(x, "set_dynamic_range") != version.startswith("11.")
    assert hasattr(trt.get_plugin_registry(), "get_plugin_creator") != version.startswith("11.")


@pytest.mark.parametrize("version", VERSIONS)
def test_engine_activation_memory_per_version(version):
    from trtbuild.backends.trt.engine import engine_device_memory

    from trt_api.strict import FakeObject

    engine = FakeObject(StrictTrt(version), "ICudaEngine")  # (a real one needs a runtime and a plan)
    assert engine_device_memory(engine) == 0  # read through whichever property this version has
    assert hasattr(engine, "device_memory_size") != version.startswith("11.")
    assert hasattr(engine, "device_memory_size_v2") != version.startswith("8.")


def test_inspector_entries_of_tensorrt_11():
    from trtbuild.backends.trt.inspect import _layer_precision

    layer = {"Outputs": [{"Name": "x", "Datatype": "Int8", "Format": "Row major linear"}]}
    assert _layer_precision(layer) == "int8"
    assert _layer_precision({"Outputs": [{"Format/Datatype": "Row major linear FP16 format"}]}) == "fp16"


@pytest.mark.parametrize("version", VERSIONS)
def test_plugin_tactic_sources_leave_out_cudnn_on_every_version(version):
    from trtbuild.backends.trt.build import plugin_tactic_sources

    names = [s.name for s in plugin_tactic_sources(StrictTrt(version))]
    assert "CUDNN" not in names and names
    assert names == (["CUBLAS", "CUBLAS_LT"] if version.startswith("8.") else
                     ["EDGE_MASK_CONVOLUTIONS", "JIT_CONVOLUTIONS"])


# every `trt.X` / `trt.X.Y` the TensorRT package of trtbuild names, against each version's recorded surface; the
# names a version lacks are on code paths that version never reaches (each says where it is guarded)
NOT_IN_BINDINGS = {"nptype": "a Python helper of the tensorrt package, outside the bindings module"}
GUARDED = {
    "11.4.0": {"NetworkDefinitionCreationFlag.EXPLICIT_BATCH": "plugins.plugin_network, after load_plugins refuses 11",
               "TacticSource.CUBLAS": "build.plugin_tactic_sources, TensorRT < 10 only",
               "TacticSource.CUBLAS_LT": "build.plugin_tactic_sources, TensorRT < 10 only"},
}


def _attributes():
    """Every attribute access (ast.Attribute) in the source of trtbuild/backends/trt."""
    import ast
    import os

    from helpers import ROOT

    folder = os.path.join(ROOT, "trtbuild", "backends", "trt")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            for node in ast.walk(ast.parse(open(os.path.join(folder, name), encoding="utf-8").read())):
                if isinstance(node, ast.Attribute):
                    yield node


def _trt_names():
    import ast

    used = set()
    for node in _attributes():
        chain, n = [], node
        while isinstance(n, ast.Attribute):
            chain.append(n.attr)
            n = n.value
        if isinstance(n, ast.Name) and n.id == "trt" and chain[-1] != "__version__":
            used.add(".".join(list(reversed(chain))[:2]))
    return used


@pytest.mark.parametrize("version", VERSIONS)
def test_every_tensorrt_name_the_package_uses_exists_in_each_version(version):
    trt = StrictTrt(version)
    missing = set()
    for name in _trt_names():
        if name.split(".")[0] in NOT_IN_BINDINGS:
            continue
        try:
            obj = trt
            for part in name.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            missing.add(name)
    assert missing == set(GUARDED.get(version, {})), missing


# the methods and properties trtbuild's TensorRT package uses on the objects it holds, by the variable's name
HOLDERS = {"engine": "ICudaEngine", "context": "IExecutionContext", "ctx": "IExecutionContext", "runtime": "Runtime",
           "inspector": "EngineInspector", "network": "INetworkDefinition", "builder": "Builder"}
GUARDED_MEMBERS = {  # (class, member): where the code asks hasattr first
    "8.6.1": {("ICudaEngine", "device_memory_size_v2"): "engine.engine_device_memory"},
    "10.13.3": {("INetworkDefinition", "add_fully_connected"): "plugins.dense"},
    "11.4.0": {("ICudaEngine", "device_memory_size"): "engine.engine_device_memory",
               ("INetworkDefinition", "add_fully_connected"): "plugins.dense"},
}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_member_the_package_uses_on_tensorrt_objects_exists_in_each_version(version):
    import ast

    used = set()
    for node in _attributes():
        holder = node.value.id if isinstance(node.value, ast.Name) else \
            node.value.attr if isinstance(node.value, ast.Attribute) else None
        if holder in HOLDERS:
            used.add((HOLDERS[holder], node.attr))
    trt = StrictTrt(version)
    missing = {(c, a) for c, a in used
               if trt.lookup(c, "methods", a) is None and trt.lookup(c, "properties", a) is None}
    assert used and missing == set(GUARDED_MEMBERS[version]), missing


@pytest.mark.parametrize("version", VERSIONS)
def test_layer_precisions_asks_the_engine_inspector_for_json(version):
    from trt_api.strict import FakeObject
    from trtbuild.backends.trt.inspect import layer_precisions

    trt = StrictTrt(version)
    assert layer_precisions(trt, FakeObject(trt, "ICudaEngine")) == {}  # (the stand-in's JSON is empty)
    asked = [(c, m, a) for c, m, a, _ in trt.calls if m == "get_engine_information"]
    assert asked and asked[0][0] == "EngineInspector" and asked[0][2][0].name == "JSON"
