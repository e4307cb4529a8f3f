"""What an engine holds: its tensors, profiles and per-precision layer counts (TensorRT's engine inspector),
beside its manifest entry."""

import json
import os

from trtbuild.backends.trt import import_tensorrt
from trtbuild.backends.trt.engine import deserialize_engine
from trtbuild.backends.trt.manifest import check_engine, engine_files
from trtbuild.errors import NoGpuError


def inspect_engine(path):
    """{kind: engine, manifest, tensors, profiles, layers, tensorrt} of an engine file; the manifest entry
    alone where TensorRT is not installed."""
    info = {"path": path, "bytes": os.path.getsize(path)}
    entry = check_engine(path, inputs=False)  # its manifest entry, bytes and hash (not the GPU: inspect runs anywhere)
    info.update(kind="engine", manifest=entry)
    try:
        trt = import_tensorrt()
    except NoGpuError:
        info["note"] = "TensorRT not installed: the manifest entry only (the engine's bytes match it)"
        return info
    tensors, layers, profiles = {}, {}, 0
    files = engine_files(path, entry)
    for part, _ in files:  # an engine of several plans (one per profile): their profiles in order
        runtime, engine = deserialize_engine(trt, part)  # (the runtime outlives the engine)
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            t = tensors.setdefault(name, {"name": name, "mode": str(engine.get_tensor_mode(name)).split(".")[-1],
                                          "dtype": str(engine.get_tensor_dtype(name)).split(".")[-1],
                                          "shape": list(engine.get_tensor_shape(name))})
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                t.setdefault("profiles", []).extend([[list(s) for s in engine.get_tensor_profile_shape(name, p)]
                                                     for p in range(engine.num_optimization_profiles)])
        profiles += engine.num_optimization_profiles
        for k, v in layer_precisions(trt, engine).items():
            layers[k] = layers.get(k, 0) + v
    info.update(tensors=list(tensors.values()), profiles=profiles, plans=len(files), layers=layers,
                tensorrt=trt.__version__)
    return info


def layer_precisions(trt, engine):
    """Layer count per precision of a deserialized engine from the engine inspector (TensorRT >= 8.2), {} where
    unavailable."""
    try:
        inspector = engine.create_engine_inspector()
        info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    except Exception:  # the inspector is a diagnostic; its absence must not fail a build
        return {}
    counts = {}
    for layer in info.get("Layers", []):
        precision = _layer_precision(layer)
        counts[precision] = counts.get(precision, 0) + 1
    return counts


def _layer_precision(layer):
    """The precision of a layer's first output (TensorRT's inspector names it inside a format string,
    e.g. "Row major linear Int8 format"). With dynamic shapes TensorRT 8.6 reports "N/A due to dynamic
    shapes" and compiles the whole encoder into one Myelin ForeignNode per profile: then the layer
    type is counted instead (e.g. {"myelin": 4, "reformat": 3, "shapehosttodevice": 4})."""
    if not isinstance(layer, dict):
        text = str(layer)
        outputs = []
    else:
        outputs = list(layer.get("Outputs", []) or []) + list(layer.get("Inputs", []) or [])
        text = ""
    for t in outputs:
        # TensorRT 8.6 / 10 write "Format/Datatype"; 11 splits it into "Datatype" and "Format"
        text = str(t.get("Format/Datatype") or t.get("Datatype") or "") if isinstance(t, dict) else str(t)
        if text:
            break
    lowered = text.lower()
    for needle, tag in (("int8", "int8"), ("half", "fp16"), ("fp16", "fp16"), ("float", "fp32"), ("fp32", "fp32"),
                        ("int32", "int32"), ("bool", "bool")):
        if needle in lowered:
            return tag
    if isinstance(layer, dict) and layer.get("LayerType"):
        return str(layer["LayerType"]).lower()
    return "other"
