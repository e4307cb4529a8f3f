"""Logit parity of a candidate (engine or ONNX) against the ONNX Runtime FP32 baseline on eval texts.

The CPU side tokenizes once into length buckets and saves an npz keyed by content hash
(`save_eval_inputs`); the GPU side needs only numpy, ONNX Runtime and TensorRT (`compare`), so it
runs under the staged TensorRT Python without torch or a tokenizer.
"""

import hashlib
import json
import os

import numpy as np

from trtbuild.backends import runner_for
from trtbuild.backends.ort import OrtRunner
from trtbuild.config import DEFAULT_BUCKETS, clip_buckets
from trtbuild.data import batches_from_arrays, batches_to_arrays, load_corpus, tokenize_into_buckets
from trtbuild.workdir import WorkDir, atomic_path, check_export


def save_eval_inputs(workdir, eval_files, n=64, text_column="text", label_column="label", buckets=DEFAULT_BUCKETS):
    """Tokenize the first `n` texts of the eval files; write WORKDIR/cache/eval-<hash>.npz; return its path."""
    record = check_export(workdir)
    corpus = load_corpus(eval_files, text_column, label_column, max_texts=None)
    # an even spread over the files: round-robin by source
    by_source = {}
    for i, src in enumerate(corpus.sources):
        by_source.setdefault(src, []).append(i)
    order = [i for group in zip(*by_source.values()) for i in group][:n]
    texts = [corpus.texts[i] for i in order]
    tokenizer = WorkDir(workdir).load_tokenizer()
    tok = tokenize_into_buckets(tokenizer, texts, clip_buckets(buckets, record["max_length"]))
    arrays = batches_to_arrays([(b.inputs, b.rows) for b in tok.batches(
        record["inputs"], batch_size=len(texts), pad_id=tokenizer.pad_token_id or 0)])
    digest = hashlib.sha256(json.dumps([texts, record["sha256"]["onnx"]], ensure_ascii=False).encode("utf-8")).hexdigest()
    path = os.path.join(WorkDir(workdir).cache, "eval-{}.npz".format(digest[:16]))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, texts=np.asarray(texts), inputs=np.asarray(record["inputs"]), **arrays)
    return path


def load_batches(npz_path):
    data = np.load(npz_path, allow_pickle=False)
    inputs = [str(x) for x in data["inputs"]]
    return [str(t) for t in data["texts"]], batches_from_arrays(data, inputs)


def compare(baseline_onnx, candidate, npz_path, batch_size=16):
    """Max / mean |logit diff| and argmax agreement of `candidate` (engine or ONNX path) vs the FP32 ONNX."""
    texts, batches = load_batches(npz_path)
    ref = np.zeros((len(texts), 0), dtype=np.float32)
    got = None
    with OrtRunner(baseline_onnx) as base, runner_for(candidate) as cand:
        ref_rows, got_rows = {}, {}
        for feeds, rows in batches:
            for i in range(0, len(rows), batch_size):
                sub = {n: a[i:i + batch_size] for n, a in feeds.items()}
                r, g = base.infer(sub), cand.infer(sub)
                for j, row in enumerate(rows[i:i + batch_size]):
                    ref_rows[int(row)], got_rows[int(row)] = r[j], g[j]
    ref = np.stack([ref_rows[i] for i in range(len(texts))])
    got = np.stack([got_rows[i] for i in range(len(texts))])
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    return {"texts": len(texts), "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "argmax_agreement": float((ref.argmax(-1) == got.argmax(-1)).mean()), "candidate": candidate}
