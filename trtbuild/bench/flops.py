"""How much of the GPU a measured time uses: FLOPs per sequence from the model's shape, divided by the time and
by the GPU's dense peak (pure; no GPU needed).

A BERT encoder layer on a sequence of S tokens, hidden H, FFN width I: the GEMMs cost 2 x (4 H^2 + 2 H I) FLOPs per
token (Q, K, V, attention output, FFN in, FFN out) and the attention core 2 x 2 S H (Q.K^T and P.V). Embeddings,
LayerNorm, softmax, GELU and the classifier are left out (elementwise or one row: under 0.5 % for BERT-base at 128).
BERT-base at S 128: 22.35 GFLOP per sequence.
"""

import json
import os

from trtbuild.config import MODEL_SHAPE_KEYS

# Dense (no sparsity) peak TFLOP/s per GPU, FP16 tensor core with FP32 accumulate / INT8, from NVIDIA's data
# sheets. Matched against the GPU's name, first match wins (PCIe and NVL before the SXM default).
PEAKS = (
    ("H200", 989.0, 1979.0, "H200 SXM"),
    ("H100 PCIe", 756.0, 1513.0, "H100 PCIe"),
    ("H100 NVL", 835.0, 1671.0, "H100 NVL"),
    ("H100", 989.0, 1979.0, "H100 SXM"),
    ("GH200", 989.0, 1979.0, "GH200"),
    ("A100", 312.0, 624.0, "A100"),
    ("L40S", 362.0, 733.0, "L40S"),
    ("L4", 121.0, 242.0, "L4"),
    ("A10G", 70.0, 140.0, "A10G"),
    ("A10", 125.0, 250.0, "A10"),
)


def peak_tflops(gpu_name):
    """{"fp16", "int8" (dense TFLOP/s), "gpu" (the data-sheet name)} for a GPU name, or None when unknown."""
    name = (gpu_name or "").upper()
    for key, fp16, int8, sheet in PEAKS:
        if key.upper() in name:
            return {"fp16": fp16, "int8": int8, "gpu": sheet, "source": "NVIDIA data sheet, dense"}
    return None


def flops_per_sequence(shape, seq):
    """Encoder FLOPs for one sequence of `seq` tokens (see the module's docstring)."""
    layers, hidden, inter = shape["num_hidden_layers"], shape["hidden_size"], shape["intermediate_size"]
    per_token = 2 * (4 * hidden * hidden + 2 * hidden * inter) + 4 * seq * hidden
    return float(layers * seq * per_token)


def model_shape(export_record):
    """The encoder's shape: export.json's `model_shape` (exports since issue 18), else the checkpoint's
    config.json; None when neither is there."""
    shape = export_record.get("model_shape")
    if isinstance(shape, dict) and all(isinstance(shape.get(k), int) for k in MODEL_SHAPE_KEYS[:3]):
        return shape
    path = os.path.join(export_record.get("checkpoint") or "", "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(cfg, dict) or not all(isinstance(cfg.get(k), int) and cfg.get(k) > 0 for k in MODEL_SHAPE_KEYS[:3]):
        return None
    return {k: cfg[k] for k in MODEL_SHAPE_KEYS if isinstance(cfg.get(k), int)}


def peak_share(shape, seq, seq_per_s, peak):
    """The share of `peak` (TFLOP/s) that `seq_per_s` sequences of `seq` tokens a second use."""
    return flops_per_sequence(shape, seq) * seq_per_s / (peak * 1e12)
