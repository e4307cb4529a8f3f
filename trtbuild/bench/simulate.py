"""The seed's dynamic batching, replayed on a service-time table (pure Python: no GPU, CPU-tested).

Requests arrive as a Poisson stream with lengths drawn from the eval set, go to the smallest length bucket
that holds them, one queue per bucket; when the GPU is free, a bucket with `min_batch` or more requests is
dispatched (up to `max_batch`), and a bucket short of that once its oldest request has waited `timeout_ms`;
among ready buckets the one with the oldest request goes first. A batch takes the time measured for its
(batch size, bucket) on the backend, interpolated between measured batch sizes.
"""

import math
import random
from collections import deque

import numpy as np

from trtbuild.bench.timing import percentile, sample_inputs


def bucket_of(length, buckets):
    """The smallest bucket that holds `length` tokens (the largest when none does: truncated)."""
    for b in buckets:
        if length <= b:
            return b
    return buckets[-1]


def service_ms(table, bucket, batch):
    """Milliseconds for `batch` texts in `bucket` from {bucket: {batch: ms}}, interpolated linearly
    between measured batch sizes (above the largest: scaled per batch)."""
    row = table[bucket]
    sizes = sorted(row)
    if batch in row:
        return row[batch]
    if batch < sizes[0]:
        return row[sizes[0]]
    if batch > sizes[-1]:
        return row[sizes[-1]] * batch / sizes[-1]
    for lo, hi in zip(sizes, sizes[1:]):
        if lo < batch < hi:
            return row[lo] + (row[hi] - row[lo]) * (batch - lo) / (hi - lo)
    raise AssertionError("unreachable")


def arrivals(rate, lengths, requests, seed=0):
    """A Poisson stream: (arrival seconds, length) for `requests` texts at `rate` per second, lengths
    drawn with replacement from `lengths`."""
    rng = random.Random(seed)
    t = 0.0
    out = []
    for _ in range(requests):
        t += rng.expovariate(rate)
        out.append((t, lengths[rng.randrange(len(lengths))]))
    return out


def simulate(stream, table, buckets, sim):
    """Replay `stream` [(arrival s, length)] through the dispatcher (see the module doc) on one GPU that
    runs one batch at a time. Returns {"latency_ms": [...per request], "batches", "mean_batch",
    "busy_fraction", "throughput", "bucket_share"}."""

    timeout = sim.timeout_ms / 1e3
    queues = {b: deque() for b in buckets}
    latencies = []
    batches = 0
    busy = 0.0
    i, n = 0, len(stream)
    now = 0.0
    counts = {b: 0 for b in buckets}
    while i < n or any(queues.values()):
        while i < n and stream[i][0] <= now:  # admit everything that has arrived
            b = bucket_of(stream[i][1], buckets)
            queues[b].append(stream[i][0])
            counts[b] += 1
            i += 1
        # a bucket is due once its oldest request's deadline (arrival + timeout) has come; the same sum
        # as the idle advance below, so float rounding cannot leave a due bucket waiting forever
        ready = [b for b in buckets if queues[b] and (len(queues[b]) >= sim.min_batch
                                                      or queues[b][0] + timeout <= now)]
        if ready:
            b = min(ready, key=lambda k: queues[k][0])
            size = min(len(queues[b]), sim.max_batch)
            took = service_ms(table, b, size) / 1e3
            done = now + took
            for _ in range(size):
                latencies.append((done - queues[b].popleft()) * 1e3)
            batches += 1
            busy += took
            now = done
            continue
        # idle: wait for the next arrival or the next timeout, whichever is first
        nxt = [queues[b][0] + timeout for b in buckets if queues[b]]
        if i < n:
            nxt.append(stream[i][0])
        now = max(now, min(nxt))
    span = max(now, stream[-1][0]) if stream else 0.0
    drain = (now - stream[-1][0]) * 1e3 if stream else 0.0
    return {"latency_ms": latencies, "batches": batches, "mean_batch": len(latencies) / max(batches, 1),
            "drain_ms": drain,
            "busy_fraction": busy / span if span else 0.0, "throughput": len(latencies) / span if span else 0.0,
            "bucket_share": {str(b): round(c / max(n, 1), 4) for b, c in counts.items()}}


def summarize_sim(result, rate):
    lat = result["latency_ms"]
    return {"rate": rate, "p50_ms": round(percentile(lat, 50), 3), "p99_ms": round(percentile(lat, 99), 3),
            "max_ms": round(max(lat), 3), "mean_batch": round(result["mean_batch"], 2),
            "gpu_busy": round(result["busy_fraction"], 4), "throughput": round(result["throughput"], 1)}


def sustained_rate(lengths, table, buckets, sim, lo=10.0, hi=1e6, steps=22, min_seconds=5.0):
    """The highest offered rate (texts/s) the GPU keeps up with: over a stream of at least `min_seconds`
    (and `sim.requests` requests), simulated P99 latency within `sim.window_ms` and no backlog left when
    the stream ends (the last request served within the window of the last arrival). A short stream
    just above capacity would pass on P99 alone; 5 s of backlog growth is what catches it (to ~2 %).
    By bisection on a log scale."""
    def ok(rate):
        n = max(sim.requests, int(rate * min_seconds))
        res = simulate(arrivals(rate, lengths, n, sim.seed), table, buckets, sim)
        return percentile(res["latency_ms"], 99) <= sim.window_ms and res["drain_ms"] <= sim.window_ms

    # no stream is served faster than full batches of the cheapest bucket: a ceiling for the search
    ceiling = max(sim.max_batch * 1e3 / service_ms(table, b, sim.max_batch) for b in buckets)
    hi = min(hi, 1.05 * ceiling)
    if not ok(lo):
        return 0.0
    if ok(hi):
        return hi
    for _ in range(steps):
        mid = math.sqrt(lo * hi)
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def run_simulation(name, table, buckets, lengths, sim, padded_to=None):
    """Simulate one backend: the seed-rate run, the sustained rate and a CDF sample of latencies."""
    if padded_to is not None:  # one queue, every text padded to the longest bucket
        buckets = [padded_to]
        lengths = [min(x, padded_to) for x in lengths]
    at_seed = simulate(arrivals(sim.rate, lengths, sim.requests, sim.seed), table, buckets, sim)
    rate = sustained_rate(lengths, table, buckets, sim)
    lat = sorted(at_seed["latency_ms"])
    cdf = [round(lat[min(len(lat) - 1, int(q * len(lat) / 200))], 3) for q in range(201)]
    return {"backend": name, "buckets": list(buckets), "padded_to": padded_to,
            "at_rate": summarize_sim(at_seed, sim.rate), "bucket_share": at_seed["bucket_share"],
            "sustained_rate": round(rate, 1), "latency_cdf_ms": cdf}


def sample_bucket_inputs(input_names, batch, bucket, lengths, buckets, vocab, seed=0):
    """As _sample_inputs, but each row only as long as a text of that bucket drawn from `lengths` (the eval
    set's): the batches a build.varlen engine, which does not pad, serves in the traffic simulation."""

    feeds = sample_inputs(input_names, batch, bucket, vocab, seed)
    pool = [min(n, bucket) for n in lengths if bucket_of(n, buckets) == bucket] or [bucket]
    rows = np.random.default_rng(seed + bucket).choice(pool, size=batch)
    if "attention_mask" in feeds:
        feeds["attention_mask"] = (np.arange(bucket)[None, :] < rows[:, None]).astype(np.int64)
    return feeds
