"""Drift metrics of candidate logits against the baseline's: accuracy and macro-F1 of both, their drop in
points with a paired bootstrap 95 % interval, argmax flips, |logit diff| and mean KL. numpy only."""

import numpy as np


def softmax(x):
    z = x.astype(np.float64) - x.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _macro_f1_counts(y, pred, classes, idx=None):
    """Macro-F1 over `classes`; with idx [B, n] (bootstrap resamples) one value per resample."""
    f1s = []
    for k in classes:
        tp = (y == k) & (pred == k)
        fp = (y != k) & (pred == k)
        fn = (y == k) & (pred != k)
        if idx is not None:
            tp, fp, fn = tp[idx].sum(-1), fp[idx].sum(-1), fn[idx].sum(-1)
        else:
            tp, fp, fn = tp.sum(), fp.sum(), fn.sum()
        denom = 2 * tp + fp + fn
        f1s.append(np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 0.0))
    return np.mean(f1s, axis=0)


def drift_metrics(y, base_logits, cand_logits, bootstrap=1000, seed=0):
    """Accuracy / macro-F1 of baseline and candidate, their drop in points with a paired bootstrap 95 %
    interval, flip rate, |logit diff| and mean KL(baseline || candidate). Macro-F1 averages over the true
    labels present in `y`."""
    n = len(y)
    pb, pc = base_logits.argmax(-1), cand_logits.argmax(-1)
    classes = sorted(set(int(v) for v in y))
    acc_b, acc_c = float((pb == y).mean()), float((pc == y).mean())
    f1_b, f1_c = float(_macro_f1_counts(y, pb, classes)), float(_macro_f1_counts(y, pc, classes))
    out = {
        "texts": int(n),
        "baseline": {"accuracy": acc_b, "macro_f1": f1_b},
        "candidate": {"accuracy": acc_c, "macro_f1": f1_c},
        "accuracy_drop_pt": 100.0 * (acc_b - acc_c),
        "macro_f1_drop_pt": 100.0 * (f1_b - f1_c),
    }
    if bootstrap and n > 1:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(bootstrap, n))
        acc_d = ((pb == y)[idx].mean(-1) - (pc == y)[idx].mean(-1)) * 100.0
        f1_d = (_macro_f1_counts(y, pb, classes, idx) - _macro_f1_counts(y, pc, classes, idx)) * 100.0
        out["accuracy_drop_ci95"] = [float(np.percentile(acc_d, 2.5)), float(np.percentile(acc_d, 97.5))]
        out["macro_f1_drop_ci95"] = [float(np.percentile(f1_d, 2.5)), float(np.percentile(f1_d, 97.5))]
    else:
        out["accuracy_drop_ci95"] = out["macro_f1_drop_ci95"] = None
    diff = np.abs(base_logits.astype(np.float64) - cand_logits.astype(np.float64))
    p, q = softmax(base_logits), softmax(cand_logits)
    kl = (p * (np.log(np.maximum(p, 1e-30)) - np.log(np.maximum(q, 1e-30)))).sum(-1)
    out.update({"flips": int((pb != pc).sum()), "flip_rate": float((pb != pc).mean()),
                "logit_max_abs_diff": float(diff.max()), "logit_mean_abs_diff": float(diff.mean()),
                "mean_kl": float(kl.mean())})
    return out
