"""Timing: run a step repeatedly and summarise the per-iteration times; and the inputs the timers feed.

Pure Python (numpy only inside the input makers): the torch worker imports this under another interpreter.
"""

import math
import time

import numpy as np


def percentile(values, q):
    """Linear-interpolated percentile (q in 0..100) of a non-empty sequence."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of nothing")
    k = (len(xs) - 1) * q / 100.0
    lo, hi = int(math.floor(k)), int(math.ceil(k))
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def timing_stats(repeat_samples, batch):
    """Stats of per-iteration seconds, one list per repeat: ms median (of the repeats' medians),
    p50/p95/p99 over every sample, seq/s at the median."""
    all_ms = [s * 1e3 for rep in repeat_samples for s in rep]
    medians = [percentile([s * 1e3 for s in rep], 50) for rep in repeat_samples]
    ms = percentile(medians, 50)
    return {"ms": round(ms, 4), "p50_ms": round(percentile(all_ms, 50), 4), "p95_ms": round(percentile(all_ms, 95), 4),
            "p99_ms": round(percentile(all_ms, 99), 4), "repeat_ms": [round(m, 4) for m in medians],
            "iterations": len(all_ms), "seq_per_s": round(batch * 1e3 / ms, 1) if ms > 0 else None}


def time_calls(step, warmup, iterations, repeats, clock=time.perf_counter):
    """Run `step()` (which must return only once the work is done, e.g. after a stream sync) `warmup`
    times, then `repeats` x `iterations` timed times; returns the per-repeat lists of seconds."""
    for _ in range(warmup):
        step()
    out = []
    for _ in range(repeats):
        samples = []
        for _ in range(iterations):
            t0 = clock()
            step()
            samples.append(clock() - t0)
        out.append(samples)
    return out


def sample_inputs(input_names, batch, seq, vocab, seed=0):
    """Token ids drawn from the vocabulary (speed does not depend on them), full attention mask."""

    rng = np.random.default_rng(seed)
    feeds = {}
    for name in input_names:
        if name == "input_ids":
            feeds[name] = rng.integers(1000 if vocab > 2000 else 1, vocab, size=(batch, seq), dtype=np.int64)
        elif name == "attention_mask":
            feeds[name] = np.ones((batch, seq), dtype=np.int64)
        else:
            feeds[name] = np.zeros((batch, seq), dtype=np.int64)
    return feeds
