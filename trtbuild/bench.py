"""`trtbuild bench`: the engines beside torch and ONNX Runtime on the same GPU, in one run.

1. Shapes (`bench.shapes`, default batch x sequence 1x128, 8x64, 64x128): for every backend,
   warm-up, then `repeats` x `iterations` timed iterations; the reported time is the median of the
   repeats' medians, p50/p95/p99 are over all timed iterations. Two modes:
   - `device`: inputs already on the GPU, timed from launch to a synchronised stream (TensorRT: the
     execution context driven directly, no Polygraphy bookkeeping; torch: CUDA tensors,
     `torch.cuda.synchronize()`);
   - `e2e`: host (numpy / CPU tensor) inputs copied in, logits copied back, synchronised.
   ONNX Runtime runs on the CPU (e2e only): the reference point a user starts from.
   TensorRT and ONNX Runtime run in this process (Python 3.9 with TensorRT on the GPU machine);
   torch runs in its own interpreter (`bench.torch_python`, default the GPU machine's
   /opt/torch/.venv/bin/python) as a subprocess (`trtbuild.bench_torch`) whose JSON is merged.
2. Dynamic batching (`simulate`): the seed's policy replayed on measured service times. Requests
   arrive as a Poisson stream with lengths drawn from the eval set (the verify cache), go to the
   smallest length bucket that holds them (32/64/128/256), one queue per bucket; when the GPU is
   free, a bucket with `min_batch` (8) or more requests is dispatched (up to `max_batch`), and a
   bucket short of that once its oldest request has waited `timeout_ms` (20 ms); among ready
   buckets the one with the oldest request goes first. A batch takes the time measured for its
   (batch size, bucket) on the backend (e2e mode, interpolated between measured batch sizes). The
   same stream padded to the longest bucket in one queue is run on torch eager FP16 for comparison.
   Reported: latency p50/p99 at the seed's 8,000 texts/s and the sustained rate (the highest rate
   whose P99 stays within the 50 ms window), by bisection.
3. Report: `reports/bench-<gpu>.json` (raw numbers, ratios such as `int8_vs_torch_compile`), a PNG
   (throughput per backend and shape, latency CDF of the simulation), a table on stdout.
"""

import json
import math
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List

from trtbuild.errors import NoGpuError, TrtbuildError

REPORT_FORMAT = "trtbuild-bench/1"
TORCH_BACKENDS = ("torch-fp32", "torch-fp16", "torch-compile-fp16")
TRT_BACKENDS = ("trt-fp16", "trt-int8")
DEFAULT_TORCH_PYTHON = "/opt/torch/.venv/bin/python"


def _noop(msg):
    pass


# ---------------------------------------------------------------------------------------------
# Timing (pure Python: also imported by the torch worker under another interpreter)

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


# ---------------------------------------------------------------------------------------------
# The seed's dynamic batching, replayed on a service-time table

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
    from collections import deque

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


# ---------------------------------------------------------------------------------------------
# Backends measured in this process

def _sample_inputs(input_names, batch, seq, vocab, seed=0):
    """Token ids drawn from the vocabulary (speed does not depend on them), full attention mask."""
    import numpy as np

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


def _sample_bucket_inputs(input_names, batch, bucket, lengths, buckets, vocab, seed=0):
    """As _sample_inputs, but each row only as long as a text of that bucket drawn from `lengths` (the eval
    set's): the batches a build.varlen engine, which does not pad, serves in the traffic simulation."""
    import numpy as np

    feeds = _sample_inputs(input_names, batch, bucket, vocab, seed)
    pool = [min(n, bucket) for n in lengths if bucket_of(n, buckets) == bucket] or [bucket]
    rows = np.random.default_rng(seed + bucket).choice(pool, size=batch)
    if "attention_mask" in feeds:
        feeds["attention_mask"] = (np.arange(bucket)[None, :] < rows[:, None]).astype(np.int64)
    return feeds


class CudaGraph:
    """One launch (TensorRT's enqueue of an execution context) captured on a stream as a CUDA graph and
    replayed with one `cudaGraphLaunch`: the kernels' addresses, shapes and arguments are fixed at
    capture, so a new input shape or buffer needs a new capture. The CUDA runtime is Polygraphy's
    (`cuda.wrapper().handle`, a ctypes handle of libcudart; `lib` replaces it in tests).
    `capture()` returns a CudaGraph, or raises TrtbuildError with the step that failed; the stream
    leaves capture mode either way."""

    THREAD_LOCAL = 1  # cudaStreamCaptureModeThreadLocal: other threads' CUDA calls do not break the capture

    def __init__(self, lib, graph, graph_exec):
        self.lib, self.graph, self.graph_exec = lib, graph, graph_exec

    @classmethod
    def capture(cls, stream_ptr, launch, lib=None):
        import ctypes

        if lib is None:
            from polygraphy import cuda

            lib = cuda.wrapper().handle
        stream = ctypes.c_void_p(stream_ptr)
        status = lib.cudaStreamBeginCapture(stream, ctypes.c_int(cls.THREAD_LOCAL))
        if status:
            raise TrtbuildError("CUDA graph capture could not start (cudaStreamBeginCapture error {})".format(status))
        graph = ctypes.c_void_p()
        launched = False
        try:
            launched = launch()
        except BaseException:  # leave capture mode (or the stream stays unusable), drop what was captured
            lib.cudaStreamEndCapture(stream, ctypes.byref(graph))
            lib.cudaGetLastError()
            if graph.value:
                lib.cudaGraphDestroy(graph)
            raise
        ended = lib.cudaStreamEndCapture(stream, ctypes.byref(graph))
        lib.cudaGetLastError()  # a failed capture leaves its error behind: clear it
        failed = None
        if not launched:
            failed = "the launch failed while captured"
        elif ended or not graph.value:
            failed = "cudaStreamEndCapture error {}".format(ended)
        graph_exec = ctypes.c_void_p()
        if failed is None:
            status = lib.cudaGraphInstantiateWithFlags(ctypes.byref(graph_exec), graph, ctypes.c_ulonglong(0))
            if status or not graph_exec.value:
                failed = "cudaGraphInstantiateWithFlags error {}".format(status)
                lib.cudaGetLastError()
        if failed is not None:
            if graph.value:
                lib.cudaGraphDestroy(graph)
            raise TrtbuildError("CUDA graph capture failed: {}".format(failed))
        return cls(lib, graph, graph_exec)

    def launch(self, stream_ptr):
        import ctypes

        status = self.lib.cudaGraphLaunch(self.graph_exec, ctypes.c_void_p(stream_ptr))
        if status:
            raise TrtbuildError("cudaGraphLaunch failed with CUDA error {}".format(status))

    def free(self):
        if self.graph_exec is not None:
            self.lib.cudaGraphExecDestroy(self.graph_exec)
            self.lib.cudaGraphDestroy(self.graph)
        self.graph = self.graph_exec = None


class TrtTimer:
    """A trtbuild engine driven through its execution context: device buffers sized per shape, the
    profile that fits picked, launches on one stream. `device()` times execute + sync, `e2e()`
    adds the host-to-device input copies and the logits copy back. With `cuda_graph` (bench's
    default) `prepare()` captures the enqueue as a CUDA graph per shape and both replay it, as a
    serving loop would; `device_plain()` times the plain enqueue beside it. A capture that fails
    leaves the plain enqueue in use and its reason in `graph_error`."""

    def __init__(self, path, cuda_graph=False):
        from polygraphy import cuda

        from trtbuild.build import (check_engine, create_context, deserialize_engine, engine_profiles, fit_feeds,
                                    gpu_info, import_tensorrt)
        from trtbuild.plugins import varlen_feeds

        trt = import_tensorrt()
        self.trt = trt
        self.cuda = cuda
        self.entry = check_engine(path, gpu_info(), trt.__version__)
        self._fit_feeds = fit_feeds
        self.profiles = engine_profiles(self.entry)
        free_before = gpu_memory()[0]
        self.runtime, self.engine = deserialize_engine(trt, path)
        self.context = create_context(self.engine, path)
        self.stream = cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.tensors_in = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        # what callers feed: the engine's inputs, or for a build.varlen engine the [batch, seq] ones it packs
        varlen = varlen_feeds(self.engine, self.tensors_in, self.entry)
        self.varlen = varlen is not None
        self.inputs, self._pack = varlen or (self.tensors_in, None)
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        import numpy as np

        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.buffers = {}
        self.host = {}
        self.profile = 0
        self.cuda_graph = cuda_graph
        self.graph = None
        self.graph_error = None
        self.memory_bytes = max(0, free_before - gpu_memory()[0]) if free_before else None
        self.activation_bytes = int(self.engine.device_memory_size)

    def prepare(self, feeds):
        import numpy as np

        self._free_graph()  # captured with the previous shape and buffers
        if self.varlen:  # packed as the engine takes them (the packing is host work, outside the timing)
            feeds = self._pack(feeds)
        elif self.profiles:  # timed as the engine runs it: padded to its profile's sequence where needed
            index, feeds = self._fit_feeds(self.profiles, feeds, self.inputs)
            if index != self.profile:
                self.context.set_optimization_profile_async(index, self.stream.ptr)
                self.stream.synchronize()
                self.profile = index
        for name in self.tensors_in:
            host = np.ascontiguousarray(feeds[name].astype(self.dtypes[name], copy=False))
            self.host[name] = host
            self.context.set_input_shape(name, host.shape)
            self._buffer(name, host.shape).copy_from(host, self.stream)
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            self.host[name] = np.empty(shape, dtype=self.dtypes[name])
            self._buffer(name, shape)
        for name in self.tensors_in + self.outputs:
            self.context.set_tensor_address(name, self.buffers[name].ptr)
        self.stream.synchronize()
        if self.cuda_graph and self.graph_error is None:
            self._enqueue()  # TensorRT applies new shapes on the first enqueue: once outside the capture
            self.stream.synchronize()
            try:
                self.graph = CudaGraph.capture(self.stream.ptr, lambda: self.context.execute_async_v3(self.stream.ptr))
            except Exception as e:  # (TensorRT's bindings raise their own errors) the plain enqueue from here on
                self.graph_error = str(e) if isinstance(e, TrtbuildError) else "CUDA graph capture failed: {}".format(e)

    def _free_graph(self):
        if self.graph is not None:
            self.graph.free()
            self.graph = None

    def _enqueue(self):
        if not self.context.execute_async_v3(self.stream.ptr):
            raise TrtbuildError("TensorRT execute_async_v3 failed; see the log above")

    def _launch(self):
        if self.graph is not None:
            self.graph.launch(self.stream.ptr)
        else:
            self._enqueue()

    @property
    def graph_status(self):
        """For the report: True (replayed as a CUDA graph), False (not asked) or why the capture failed."""
        return self.graph_error or bool(self.cuda_graph)

    def _buffer(self, name, shape):
        buf = self.buffers.get(name)
        if buf is None:
            buf = self.buffers[name] = self.cuda.DeviceArray(shape=shape, dtype=self.dtypes[name])
        else:
            buf.resize(shape)
        return buf

    def device(self):
        self._launch()
        self.stream.synchronize()

    def device_plain(self):
        self._enqueue()
        self.stream.synchronize()

    def e2e(self):
        for name in self.tensors_in:
            self.buffers[name].copy_from(self.host[name], self.stream)
        self._launch()
        for name in self.outputs:
            self.buffers[name].copy_to(self.host[name], self.stream)
        self.stream.synchronize()

    def close(self):
        self._free_graph()
        for buf in self.buffers.values():
            buf.free()
        self.buffers = {}
        self.stream.free()
        self.context = None
        self.engine = None


def gpu_memory():
    """(free, total) bytes of the current GPU via the CUDA runtime, (None, None) if unavailable."""
    import ctypes

    from trtbuild.build import _cudart

    lib = _cudart()
    if lib is None:
        return None, None
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    if lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)) != 0:
        return None, None
    return free.value, total.value


# ---------------------------------------------------------------------------------------------
# The report

@dataclass
class BenchReport:
    """Raw timings per backend, shape and mode; simulations; ratios. `write()` saves JSON + PNG."""

    config_name: str
    device: Dict
    results: List[Dict]  # {"backend", "batch", "seq", "mode", **timing_stats}
    simulations: List[Dict] = field(default_factory=list)
    memory: Dict = field(default_factory=dict)
    skipped: Dict = field(default_factory=dict)  # backend -> why it was not measured
    info: Dict = field(default_factory=dict)
    seconds: float = 0.0
    paths: Dict = field(default_factory=dict)

    def lookup(self, backend, batch, seq, mode="device"):
        for r in self.results:
            if (r["backend"], r["batch"], r["seq"], r["mode"]) == (backend, batch, seq, mode):
                return r
        return None

    def ratios(self):
        """Per shape: engine speed-up over torch.compile FP16 and torch eager FP16 (device mode, time ratio),
        and the simulations' sustained rate over torch eager FP16 padded to max."""
        out = {}
        for batch, seq in sorted({(r["batch"], r["seq"]) for r in self.results}):
            row = {}
            for engine in TRT_BACKENDS:
                mine = self.lookup(engine, batch, seq)
                short = engine.split("-")[1]
                plain = self.lookup(engine, batch, seq, "device-plain")
                for ref, label in (("torch-compile-fp16", "torch_compile"), ("torch-fp16", "torch_eager_fp16")):
                    theirs = self.lookup(ref, batch, seq)
                    if mine and theirs:
                        row["{}_vs_{}".format(short, label)] = round(theirs["ms"] / mine["ms"], 3)
                    if plain and theirs:  # the engine without its CUDA graph (torch.compile's default mode has none)
                        row["{}_plain_vs_{}".format(short, label)] = round(theirs["ms"] / plain["ms"], 3)
            if row:
                out["b{}xs{}".format(batch, seq)] = row
        sims = {s["backend"]: s for s in self.simulations}
        padded = sims.get("torch-fp16 padded")
        if padded and padded["sustained_rate"]:
            for engine in TRT_BACKENDS:
                if engine in sims:
                    out.setdefault("simulation", {})["{}_vs_torch_fp16_padded".format(engine.split("-")[1])] = round(
                        sims[engine]["sustained_rate"] / padded["sustained_rate"], 3)
        return out

    def to_dict(self):
        ratios = self.ratios()
        headline = ratios.get("b64xs128", {})
        return {"format": REPORT_FORMAT, "config": self.config_name, "device": self.device, "seconds": self.seconds,
                "int8_vs_torch_compile": headline.get("int8_vs_torch_compile"),
                "fp16_vs_torch_compile": headline.get("fp16_vs_torch_compile"),
                "ratios": ratios, "results": self.results, "simulations": self.simulations, "memory": self.memory,
                "skipped": self.skipped, "info": self.info, "paths": self.paths,
                "notes": {"device": "inputs already on the GPU, launch to synchronised stream (TensorRT: one CUDA "
                                    "graph launch where info.cuda_graph.engines says True)",
                          "device-plain": "TensorRT only, with a CUDA graph: the same engine and shape enqueued "
                                          "without it (ratios *_plain_vs_*); torch.compile runs in its default "
                                          "mode, without CUDA graphs",
                          "e2e": "host inputs copied in and logits copied back, synchronised",
                          "ms": "median of the repeats' median per-iteration time; seq_per_s = batch / ms",
                          "ratios": "time of the reference / time of the engine at the same shape (device mode)"}}

    def table(self):
        """A compact text table: one row per backend and mode, one column per shape (ms and seq/s)."""
        shapes = sorted({(r["batch"], r["seq"]) for r in self.results})
        lines = ["{:<20} {:<12} ".format("backend", "mode") + "".join(
            "{:>22}".format("B{} S{}".format(b, s)) for b, s in shapes)]
        seen = []
        for r in self.results:
            key = (r["backend"], r["mode"])
            if key not in seen:
                seen.append(key)
        for backend, mode in seen:
            cells = []
            for b, s in shapes:
                r = self.lookup(backend, b, s, mode)
                cells.append("{:>22}".format("{:.2f} ms {:>8,.0f}/s".format(r["ms"], r["seq_per_s"] or 0) if r else "-"))
            lines.append("{:<20} {:<12} ".format(backend, mode) + "".join(cells))
        for name, why in self.skipped.items():
            lines.append("{:<20} skipped: {}".format(name, why))
        for s in self.simulations:
            a = s["at_rate"]
            lines.append("simulation {:<18} at {:,.0f}/s: p50 {:.1f} ms, p99 {:.1f} ms, mean batch {:.1f}; sustained "
                         "{:,.0f}/s within P99 <= window".format(s["backend"], a["rate"], a["p50_ms"], a["p99_ms"],
                                                                  a["mean_batch"], s["sustained_rate"]))
        for shape, row in self.ratios().items():
            lines.append("ratios {}: {}".format(shape, ", ".join("{} {:.2f}x".format(k, v) for k, v in row.items())))
        return "\n".join(lines)

    def write(self, report_dir):
        from trtbuild.artifacts import atomic_write_json

        os.makedirs(report_dir, exist_ok=True)
        slug = "".join(c if c.isalnum() else "-" for c in self.device.get("gpu", "cpu").lower()).strip("-")
        slug = "-".join(p for p in slug.split("-") if p) or "cpu"
        base = os.path.join(report_dir, "bench-{}".format(slug))
        self.paths = {"json": base + ".json"}
        png = plot(self, base + ".png")
        if png:
            self.paths["png"] = png
        atomic_write_json(self.paths["json"], self.to_dict())
        return self.paths


def plot(report, path):
    """Throughput per backend and shape (device mode, log scale) and the simulations' latency CDF, as a PNG;
    returns the path, or None without matplotlib."""
    from trtbuild.report import matplotlib_pyplot

    plt = matplotlib_pyplot()
    if plt is None:
        return None
    from trtbuild.artifacts import atomic_path

    shapes = sorted({(r["batch"], r["seq"]) for r in report.results})
    backends = []
    for r in report.results:
        if r["backend"] not in backends:
            backends.append(r["backend"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    width = 0.8 / max(len(backends), 1)
    for k, backend in enumerate(backends):
        values = []
        for b, s in shapes:
            r = report.lookup(backend, b, s, "device") or report.lookup(backend, b, s, "e2e")
            values.append(r["seq_per_s"] if r else 0)
        ax.bar([i + k * width for i in range(len(shapes))], values, width, label=backend)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(shapes))])
    ax.set_xticklabels(["B{} S{}".format(b, s) for b, s in shapes])
    ax.set_yscale("log")
    ax.set_ylabel("sequences / s (device mode; ORT: CPU)")
    ax.set_title("throughput per backend and shape")
    ax.legend(fontsize=8)
    ax = axes[1]
    for s in report.simulations:
        cdf = s["latency_cdf_ms"]
        ax.plot(cdf, [i / (len(cdf) - 1) for i in range(len(cdf))], label="{} (p99 {:.1f} ms)".format(
            s["backend"], s["at_rate"]["p99_ms"]))
    if report.simulations:
        window = report.info.get("simulate", {}).get("window_ms")
        if window:
            ax.axvline(window, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("request latency, ms (simulated at {:,.0f} texts/s)".format(report.simulations[0]["at_rate"]["rate"]))
        ax.set_ylabel("share of requests")
        ax.set_title("dynamic batching: latency CDF")
        ax.legend(fontsize=8)
    else:
        ax.set_axis_off()
    fig.suptitle("{} on {}".format(report.config_name, report.device.get("gpu", "CPU")))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# The run

def eval_lengths(workdir):
    """Token lengths of the eval texts from the newest verify cache (no tokenizer needed)."""
    import glob

    import numpy as np

    found = sorted(glob.glob(os.path.join(workdir, "cache", "verify-*.npz")), key=os.path.getmtime)
    if not found:
        raise TrtbuildError("no eval lengths for the batching simulation in {}: run `trtbuild verify {} --candidate "
                            "fp32` once (it caches the eval set), or pass --no-simulate".format(
                                os.path.join(workdir, "cache"), workdir))
    with np.load(found[-1], allow_pickle=False) as data:
        return [int(x) for x in data["lengths"]]


def _torch_python(config):
    if config.bench.torch_python:
        return config.bench.torch_python
    if os.environ.get("TRTBUILD_TORCH_PYTHON"):
        return os.environ["TRTBUILD_TORCH_PYTHON"]
    if os.path.isfile(DEFAULT_TORCH_PYTHON):
        return DEFAULT_TORCH_PYTHON
    return sys.executable


def run_torch_worker(config, plan, progress=_noop):
    """Run `trtbuild.bench_torch` in the torch interpreter on `plan` (a spec dict); returns its JSON."""
    import tempfile

    python = _torch_python(config)
    with tempfile.TemporaryDirectory(prefix="trtbuild-bench-") as tmp:
        spec_path, out_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "out.json")
        with open(spec_path, "w", encoding="utf-8") as f:
            json.dump(plan, f)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = root
        if os.path.realpath(python) != os.path.realpath(sys.executable):
            # trtpy points PYTHONHOME and LD_LIBRARY_PATH at its Python 3.9 and TensorRT's libraries
            # (with cuBLAS stand-ins): the torch interpreter must not see them
            env.pop("PYTHONHOME", None)
            home = os.environ.get("PYTHONHOME", "")
            trt_home = os.path.dirname(os.path.dirname(home)) if home else "/opt/trt86"
            kept = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and not p.startswith(trt_home)]
            env["LD_LIBRARY_PATH"] = os.pathsep.join(kept)
        progress("torch: {} -m trtbuild.bench_torch ({} measurements)".format(python, len(plan["measurements"])))
        try:
            proc = subprocess.run([python, "-m", "trtbuild.bench_torch", spec_path, out_path], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                                  timeout=config.bench.torch_timeout_s)
        except FileNotFoundError:
            return {"error": "torch interpreter {} not found; set bench.torch_python".format(python)}
        except subprocess.TimeoutExpired:
            return {"error": "torch worker ran past bench.torch_timeout_s = {} s".format(config.bench.torch_timeout_s)}
        for line in proc.stdout.splitlines():
            if line.startswith("torch:"):
                progress(line)
        if proc.returncode != 0 or not os.path.isfile(out_path):
            tail = " | ".join(proc.stdout.strip().splitlines()[-3:])
            return {"error": "torch worker failed (exit {}): {}".format(proc.returncode, tail[-400:])}
        with open(out_path, encoding="utf-8") as f:
            return json.load(f)


def _vocab_size(workdir):
    from trtbuild.artifacts import WorkDir, read_json

    wd = WorkDir(workdir)
    record = read_json(wd.export_json) if os.path.isfile(wd.export_json) else {}
    return int(record.get("vocab_size") or record.get("config", {}).get("vocab_size") or 21128)


def _engine_path(workdir, precision):
    from trtbuild.verify import resolve_candidate

    return resolve_candidate(workdir, precision)[0]


def benchmark(config, backends=None, shapes=None, simulate_traffic=True, report_dir=None, progress=_noop,
              show_bar=False):
    """Measure every backend at every shape, simulate the seed's dynamic batching; returns a BenchReport
    (written under WORKDIR/reports unless report_dir is given)."""
    from trtbuild.artifacts import WorkDir
    from trtbuild.calibrate import _progress_bar
    from trtbuild.runners import OrtRunner

    start = time.perf_counter()
    bcfg, sim = config.bench, config.bench.simulate
    backends = list(backends or bcfg.backends)
    shapes = [tuple(s) for s in (shapes or bcfg.shapes)]
    wd = WorkDir(config.workdir)
    if not os.path.isfile(wd.onnx):
        raise TrtbuildError("{} not found; run `trtbuild export` first".format(wd.onnx))
    from trtbuild.artifacts import read_json

    max_length = read_json(wd.export_json).get("max_length") if os.path.isfile(wd.export_json) else None
    buckets = [b for b in config.data.buckets if not max_length or b <= max_length] or [max_length]
    lengths = eval_lengths(config.workdir) if simulate_traffic else None
    vocab = _vocab_size(config.workdir)
    skipped = {}
    results = []
    memory = {}
    sims = []
    cuda_graphs = {}  # TensorRT backend -> True / False / why the capture failed
    device = {"host": platform.node(), "python": platform.python_version(), "cpu_count": os.cpu_count()}

    # which engines exist; TensorRT present?
    engines = {}
    for name in [b for b in backends if b in TRT_BACKENDS]:
        try:
            engines[name] = _engine_path(config.workdir, name.split("-")[1])
        except TrtbuildError as e:
            skipped[name] = str(e)
    if engines:
        try:
            from trtbuild.build import gpu_info, import_tensorrt

            trt = import_tensorrt()
            gpu = gpu_info()
            device.update({"gpu": gpu.get("name"), "compute_capability": gpu.get("compute_capability"),
                           "driver": gpu.get("driver"), "tensorrt": trt.__version__})
        except NoGpuError as e:
            for name in engines:
                skipped[name] = str(e)
            engines = {}
    sim_engines = [n for n in ("trt-int8", "trt-fp16") if n in engines] if simulate_traffic else []

    # torch, in its own interpreter, first (nothing else on the GPU meanwhile)
    torch_backends = [b for b in backends if b in TORCH_BACKENDS]
    if torch_backends:
        measurements = [{"backend": b, "batch": bs, "seq": s, "modes": ["device", "e2e"]}
                        for b in torch_backends for bs, s in shapes]
        if simulate_traffic and "torch-fp16" in torch_backends:
            measurements += [{"backend": "torch-fp16", "batch": bs, "seq": buckets[-1], "modes": ["e2e"], "sim": True}
                             for bs in sim.batch_sizes]
        plan = {"checkpoint": os.path.abspath(config.model.checkpoint or ""), "vocab_size": vocab,
                "measurements": measurements, "warmup": bcfg.warmup, "iterations": bcfg.iterations,
                "repeats": bcfg.repeats, "seed": 0}
        out = run_torch_worker(config, plan, progress=progress)
        if "error" in out:
            for b in torch_backends:
                skipped[b] = out["error"]
        else:
            device.setdefault("gpu", out.get("device"))
            device["torch"] = out.get("torch")
            device["torch_cuda"] = out.get("cuda")
            memory.update(out.get("memory", {}))
            for b, why in out.get("skipped", {}).items():
                skipped[b] = why
            results += [r for r in out["results"] if not r.get("sim")]
            device["torch_attention"] = out.get("attention")
            device["torch_compile_seconds"] = out.get("compile_seconds")
            if simulate_traffic and "torch-fp16" not in skipped:
                table = {buckets[-1]: {r["batch"]: r["ms"] for r in out["results"]
                                       if r.get("sim") and r["backend"] == "torch-fp16"}}
                if table[buckets[-1]]:
                    sims.append(("torch-fp16 padded", table, buckets[-1]))

    # TensorRT engines, in this process
    for name, path in engines.items():
        timer = TrtTimer(path, cuda_graph=bcfg.cuda_graph)
        try:
            memory[name] = {"engine_file_bytes": os.path.getsize(path), "activation_bytes": timer.activation_bytes,
                            "gpu_bytes_after_load": timer.memory_bytes}
            work = [(bs, s, "shape") for bs, s in shapes]
            if name in sim_engines:
                work += [(bs, b, "sim") for b in buckets for bs in sim.batch_sizes]
            bar = _progress_bar(len(work), name, unit="shape") if show_bar else None
            table = {b: {} for b in buckets}
            for bs, s, kind in work:
                if kind == "sim" and name not in sim_engines:
                    continue  # an earlier shape of the table fitted no profile
                try:
                    if kind == "sim" and timer.varlen:  # real text lengths: this engine does not pad them
                        timer.prepare(_sample_bucket_inputs(timer.inputs, bs, s, lengths, buckets, vocab))
                    else:
                        timer.prepare(_sample_inputs(timer.inputs, bs, s, vocab))
                except TrtbuildError as e:  # a shape the engine's profiles do not hold: say so, go on
                    if kind != "sim":
                        skipped["{} B{} S{}".format(name, bs, s)] = str(e)
                        continue
                    sim_engines.remove(name)
                    skipped[name + " simulation"] = "batch {} x bucket {}: {}".format(bs, s, e)
                    continue
                if kind == "shape":
                    steps = [("device", timer.device), ("e2e", timer.e2e)]
                    if timer.graph is not None:  # the same run without the graph: what the graph is worth
                        steps.append(("device-plain", timer.device_plain))
                    for mode, step in steps:
                        stats = timing_stats(time_calls(step, bcfg.warmup, bcfg.iterations, bcfg.repeats), bs)
                        graphed = timer.graph is not None and mode != "device-plain"
                        results.append(dict(backend=name, batch=bs, seq=s, mode=mode, cuda_graph=graphed, **stats))
                else:  # the service-time table of the simulation: e2e, fewer iterations
                    stats = timing_stats(time_calls(timer.e2e, 3, max(10, bcfg.iterations // 5), 1), bs)
                    table[s][bs] = stats["ms"]
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
            if name in sim_engines:
                sims.append((name, table, None))
            cuda_graphs[name] = timer.graph_status
            progress("{}: measured {} shapes".format(name, len(shapes)))
        finally:
            timer.close()

    # ONNX Runtime on the CPU: the reference point
    ort = None
    if "ort-cpu" in backends:
        try:
            import onnxruntime as ort
        except ImportError:
            skipped["ort-cpu"] = "onnxruntime is not installed here; pip install onnxruntime"
    if ort is not None:
        with OrtRunner(wd.onnx) as runner:
            device["onnxruntime"] = ort.__version__
            for bs, s in shapes:
                feeds = _sample_inputs(runner.input_names, bs, s, vocab)
                stats = timing_stats(time_calls(lambda: runner.infer(feeds), 1, bcfg.ort_iterations, 1), bs)
                results.append(dict(backend="ort-cpu", batch=bs, seq=s, mode="e2e", **stats))
                progress("ort-cpu B{} S{}: {:.1f} ms".format(bs, s, stats["ms"]))

    # the seed's dynamic batching
    simulations = []
    for name, table, padded in sims:
        progress("simulating {} at {:,.0f} texts/s and searching the sustained rate".format(name, sim.rate))
        result = run_simulation(name, table, buckets, lengths, sim, padded_to=padded)
        result["service_ms"] = {str(b): {str(k): v for k, v in sorted(row.items())} for b, row in table.items()}
        simulations.append(result)

    info = {"shapes": [list(x) for x in shapes], "backends": backends,
            "warmup": bcfg.warmup, "iterations": bcfg.iterations, "repeats": bcfg.repeats,
            "ort_iterations": bcfg.ort_iterations, "vocab_size": vocab, "workdir": config.workdir,
            "cuda_graph": {"enabled": bcfg.cuda_graph, "engines": cuda_graphs}}
    if simulate_traffic:
        info["simulate"] = {"rate": sim.rate, "requests": sim.requests, "window_ms": sim.window_ms,
                            "timeout_ms": sim.timeout_ms, "min_batch": sim.min_batch, "max_batch": sim.max_batch,
                            "batch_sizes": list(sim.batch_sizes), "buckets": buckets, "eval_texts": len(lengths),
                            "mean_length": round(sum(lengths) / len(lengths), 1),
                            "mean_length_truncated": round(sum(min(x, buckets[-1]) for x in lengths) / len(lengths), 1)}
    report = BenchReport(config_name=config.model.name, device=device, results=results, simulations=simulations,
                         memory=memory, skipped=skipped, info=info, seconds=round(time.perf_counter() - start, 1))
    if not results:
        raise TrtbuildError("nothing was measured: {}".format("; ".join(
            "{}: {}".format(k, v) for k, v in skipped.items()) or "no backends selected"))
    report.write(report_dir or wd.path("reports"))
    return report
