# Usage: .venv/bin/python experiments/issue20-levers/bias_correction.py 400   (then verify --candidate /tmp/bc/model.bc.onnx)
"""Empirical bias correction probe: per quantized GEMM, mean (Q/DQ output - FP32 output) per channel over
calibration texts (fed the same inputs end to end), subtracted from the GEMM's bias in the Q/DQ model."""
import json, sys, time
import numpy as np, onnx, onnxruntime as ort
from onnx import numpy_helper
sys.path.insert(0, "/work/main")
from trtbuild.config import load_config
from trtbuild.workdir import WorkDir
from trtbuild.data import load_corpus, tokenize_into_buckets, sample_texts

cfg = load_config("/work/main/configs/zh-sentiment-e5-small.yaml")
wd = WorkDir(cfg.workdir)
from trtbuild.calibrate.equalize import apply_equalization, equalizations_from_scales
scales = json.load(open(wd.scales))
fp = apply_equalization(onnx.load(wd.onnx), equalizations_from_scales(scales))  # the float graph the Q/DQ one is of
q = onnx.load(wd.qdq_onnx)
# GEMM (MatMul with an initializer weight or DQ'd weight) followed by a bias Add with an initializer
def gemms(m):
    inits = {i.name for i in m.graph.initializer}
    cons = {}
    for n in m.graph.node:
        for i in n.input: cons.setdefault(i, []).append(n)
    out = {}
    for n in m.graph.node:
        if n.op_type == "MatMul" and "/encoder/" in n.name and "attention/self/MatMul" not in n.name:
            adds = [c for c in cons.get(n.output[0], []) if c.op_type == "Add" and any(i in inits for i in c.input)]
            if adds:
                out[n.name] = (n.output[0], adds[0].name, [i for i in adds[0].input if i in inits][0])
    return out
G = gemms(q)
print(len(G), "gemms")
def with_outputs(m, names):
    m2 = onnx.ModelProto(); m2.CopyFrom(m)
    for t in names:
        m2.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    return m2
outs = [v[0] for v in G.values()]
so = ort.SessionOptions(); so.intra_op_num_threads = 2
sf = ort.InferenceSession(with_outputs(fp, outs).SerializeToString(), so, providers=["CPUExecutionProvider"])
sq = ort.InferenceSession(with_outputs(q, outs).SerializeToString(), so, providers=["CPUExecutionProvider"])
tok = wd.load_tokenizer()
corpus = load_corpus(list(cfg.data.calibration))
ts = corpus.texts if hasattr(corpus, "texts") else corpus
rng = np.random.default_rng(1)
idx = rng.permutation(len(ts))[:int(sys.argv[1]) if len(sys.argv) > 1 else 400]
sums = {k: None for k in G}; count = 0
t0 = time.time()
for b in range(0, len(idx), 16):
    batch = [ts[i] for i in idx[b:b+16]]
    enc = tok(batch, padding=True, truncation=True, max_length=128, return_tensors="np")
    feeds = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    mask = feeds["attention_mask"].astype(bool)
    rf = sf.run(outs, feeds); rq = sq.run(outs, feeds)
    for k, a, c in zip(G, rf, rq):
        d = (c - a)[mask]  # [tokens, channels]
        sums[k] = d.sum(0) if sums[k] is None else sums[k] + d.sum(0)
    count += int(mask.sum())
print("stats", time.time() - t0, "s", count, "tokens")
inits = {i.name: i for i in q.graph.initializer}
for k, (_, add, bias) in G.items():
    mean = sums[k] / count
    b = numpy_helper.to_array(inits[bias]).astype(np.float32)
    inits[bias].CopyFrom(numpy_helper.from_array((b - mean).astype(np.float32), bias))
onnx.save(q, "/tmp/bc/model.bc.onnx")
print("saved")
