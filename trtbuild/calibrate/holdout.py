"""Choices made on calibration data only: a held-out part of the calibration corpus and a label-free judge.

The eval set is the judge of `trtbuild verify`; it must never tune what it then judges. So calibrate keeps
`calibrate.holdout` (default 20 %) of its corpus out of the statistics and scores every candidate Q/DQ model
there by agreement with FP32 (argmax flips, mean KL, logit MSE: no labels needed). Equalization on/off, alpha
and the fallback nodes are all decided on this split.
"""

import math
import random
import time

import numpy as np

MIN_HOLDOUT = 24  # fewer held-out texts than this: no split (too few to decide anything on)


def split_holdout(texts, fraction, seed):
    """(statistics texts, held-out texts): a seeded `fraction` of the texts is held out (none when fraction is 0
    or it would hold fewer than MIN_HOLDOUT texts)."""
    n = len(texts)
    k = int(math.ceil(fraction * n)) if fraction > 0 else 0
    if k < MIN_HOLDOUT or n - k < 1:
        return list(texts), []
    order = list(range(n))
    random.Random(seed + 7919).shuffle(order)
    held = set(order[:k])
    return [t for i, t in enumerate(texts) if i not in held], [t for i, t in enumerate(texts) if i in held]


def softmax(x):
    z = x.astype(np.float64) - x.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def agreement(base, cand):
    """Label-free agreement of candidate logits with the FP32 ones."""
    pb, pc = base.argmax(-1), cand.argmax(-1)
    p, q = softmax(base), softmax(cand)
    kl = (p * (np.log(np.maximum(p, 1e-30)) - np.log(np.maximum(q, 1e-30)))).sum(-1)
    diff = base.astype(np.float64) - cand.astype(np.float64)
    return {"texts": int(len(base)), "flips": int((pb != pc).sum()), "flip_rate": float((pb != pc).mean()),
            "mean_kl": float(kl.mean()), "logit_mse": float((diff * diff).mean())}


class Judge:
    """FP32 logits of the held-out texts, once; `score(model)` runs a candidate ONNX (ModelProto) on the same
    batches and returns `agreement` with them. `runs` and `seconds` count the candidates scored."""

    def __init__(self, fp32_model, batches, texts):
        self.batches = list(batches)
        self.texts = texts
        self.runs, self.seconds = 0, 0.0
        self.fp32 = self.logits(fp32_model)

    def logits(self, model):
        from trtbuild.backends.ort import ort_session

        start = time.perf_counter()
        session = ort_session(model.SerializeToString())
        name = session.get_outputs()[0].name
        out = np.zeros((self.texts, 0), dtype=np.float32)
        for batch in self.batches:
            logits = session.run([name], batch.inputs)[0]
            if out.shape[1] == 0:
                out = np.zeros((self.texts, logits.shape[-1]), dtype=np.float32)
            out[batch.rows] = logits
        self.seconds += time.perf_counter() - start
        return out

    def score(self, model):
        self.runs += 1
        return agreement(self.fp32, self.logits(model))
