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
   /opt/torch/.venv/bin/python) as a subprocess (`torch_worker.py`) whose JSON is merged.
2. Dynamic batching (`simulate.py`): the seed's policy replayed on measured service times. Requests
   arrive as a Poisson stream with lengths drawn from the eval set (the verify cache), go to the
   smallest length bucket that holds them (32/64/128/256), one queue per bucket; when the GPU is
   free, a bucket with `min_batch` (8) or more requests is dispatched (up to `max_batch`), and a
   bucket short of that once its oldest request has waited `timeout_ms` (20 ms); among ready
   buckets the one with the oldest request goes first. A batch takes the time measured for its
   (batch size, bucket) on the backend (e2e mode, interpolated between measured batch sizes). Every FP16 torch
   backend runs through the same policy from its own table; the same stream padded to the longest bucket in
   one queue is run on torch eager FP16 (the seed's "before").
   Reported: latency p50/p99 at the seed's 8,000 texts/s and the sustained rate (the highest rate
   whose P99 stays within the 50 ms window), by bisection.
3. Report (`report.py`): `reports/bench-<gpu>.json` (raw numbers, ratios such as `int8_vs_best_torch` against
   the fastest FP16 torch backend at each shape, each row's share of the GPU's peak from `flops.py`),
   a PNG (throughput per backend and shape, latency CDF of the simulation), a table on stdout.
This module orchestrates: the engines' timer is `trtbuild.backends.trt.timer.TrtTimer`.
"""

import glob
import os
import platform
import time

import numpy as np

from trtbuild._util import noop
from trtbuild.backends.ort import OrtRunner
from trtbuild.backends.trt.manifest import find_engine
from trtbuild.bench.flops import flops_per_sequence, model_shape, peak_share, peak_tflops
from trtbuild.bench.report import BenchReport
from trtbuild.bench.simulate import run_simulation, sample_bucket_inputs
from trtbuild.bench.timing import sample_inputs, time_calls, timing_stats
from trtbuild.bench.torch_worker import run_torch_worker
from trtbuild.config import MAX_BENCH_BATCH, TORCH_BACKENDS, TRT_BACKENDS
from trtbuild.errors import EXIT_NO_GPU, EXIT_USER, NoGpuError, TrtbuildError
from trtbuild.workdir import WorkDir, check_export, check_report_dir, locked, read_json


def eval_lengths(workdir):
    """Token lengths of the eval texts from the newest verify cache (no tokenizer needed)."""
    cache = WorkDir(workdir).cache
    found = sorted(glob.glob(os.path.join(cache, "verify-*.npz")), key=os.path.getmtime)
    if not found:
        raise TrtbuildError("no eval lengths for the batching simulation in {}: run `trtbuild verify {} --candidate "
                            "fp32` once (it caches the eval set), or pass --no-simulate".format(cache, workdir))
    with np.load(found[-1], allow_pickle=False) as data:
        return [int(x) for x in data["lengths"]]


def _vocab_size(workdir):
    wd = WorkDir(workdir)
    record = read_json(wd.export_json) if os.path.isfile(wd.export_json) else {}
    return int(record.get("vocab_size") or record.get("config", {}).get("vocab_size") or 21128)


def benchmark(config, backends=None, shapes=None, simulate_traffic=True, report_dir=None, progress=noop,
              show_bar=False, extra_engines=()):
    """Measure every backend at every shape, simulate the seed's dynamic batching; returns a BenchReport
    (written under WORKDIR/reports unless report_dir is given). `extra_engines`: engine files of other work
    directories (e.g. other build settings of the same model) timed in the same run, as backends
    `trt-<precision>@<their work directory's name>`. Its exit code is 3 when a backend asked for could
    not run for want of a GPU or TensorRT, 1 when one could not run for another reason (a missing engine)."""
    with locked(config.workdir, create=False):
        if report_dir is not None:
            check_report_dir(report_dir)
        return _benchmark(config, backends, shapes, simulate_traffic, report_dir, progress, show_bar, extra_engines)


def extra_engine(path):
    """(`trt-<precision>@<work directory name>`, that work directory) for an engine file
    WORKDIR/engines/<target>/<precision>.engine; a one-line error for anything else."""
    path = os.path.abspath(path)
    precision, ext = os.path.splitext(os.path.basename(path))
    parts = path.split(os.sep)
    if ext != ".engine" or precision not in ("fp16", "int8") or len(parts) < 4 or parts[-3] != "engines":
        raise TrtbuildError("--engine {}: expected WORKDIR/engines/<target>/fp16.engine or int8.engine as `trtbuild "
                            "build` writes it".format(path))
    if not os.path.isfile(path):
        raise TrtbuildError("--engine {}: no such engine; build it with `trtbuild build`".format(path))
    return "trt-{}@{}".format(precision, parts[-4]), os.sep.join(parts[:-3])


def _benchmark(config, backends, shapes, simulate_traffic, report_dir, progress, show_bar, extra_engines=()):
    start = time.perf_counter()
    bcfg, sim = config.bench, config.bench.simulate
    backends = list(backends or bcfg.backends)
    shapes = [tuple(s) for s in (shapes or bcfg.shapes)]
    wd = WorkDir(config.workdir)
    record = check_export(wd.root)
    max_length = record["max_length"]
    for b, s in shapes:
        if s > max_length or b > MAX_BENCH_BATCH:
            raise TrtbuildError("shape {}x{}: {}; pick shapes within the export (e.g. --shape 64x{})".format(
                b, s, "sequence {} exceeds the export's max_length {}".format(s, max_length) if s > max_length else
                "batch {} exceeds {:,}".format(b, MAX_BENCH_BATCH), min(128, max_length)))
    buckets = config.data.usable_buckets(max_length)
    lengths = eval_lengths(config.workdir) if simulate_traffic else None
    vocab = _vocab_size(config.workdir)
    skipped, missing = {}, {}  # missing: backend -> the exit code its absence gives
    results = []
    memory = {}
    sims = []
    cuda_graphs = {}  # TensorRT backend -> True / False / why the capture failed
    device = {"host": platform.node(), "python": platform.python_version(), "cpu_count": os.cpu_count()}

    # which engines exist; TensorRT present?
    engines = {}
    for name in [b for b in backends if b in TRT_BACKENDS]:
        try:
            engines[name] = find_engine(config.workdir, name.split("-")[1])
        except TrtbuildError as e:
            skipped[name], missing[name] = str(e), EXIT_USER
    for path in extra_engines:
        name, other = extra_engine(path)
        theirs = read_json(WorkDir(other).export_json) if os.path.isfile(WorkDir(other).export_json) else {}
        if (theirs.get("sha256") or {}).get("onnx") != record["sha256"].get("onnx"):
            raise TrtbuildError("--engine {}: its work directory {} holds another export (model.onnx differs from "
                                "{}'s); bench compares builds of one model".format(path, other, config.workdir))
        if name in engines:
            raise TrtbuildError("--engine {}: two engines would both be {}; pass each work directory once".format(
                path, name))
        engines[name] = os.path.abspath(path)
        backends.append(name)
    if engines:
        try:
            from trtbuild.backends.trt import import_tensorrt
            from trtbuild.backends.trt.cuda import gpu_info

            trt = import_tensorrt()
            gpu = gpu_info()
            device.update({"gpu": gpu.get("name"), "compute_capability": gpu.get("compute_capability"),
                           "driver": gpu.get("driver"), "tensorrt": trt.__version__})
        except NoGpuError as e:
            for name in engines:
                skipped[name], missing[name] = str(e), EXIT_NO_GPU
            engines = {}
    sim_engines = list(engines) if simulate_traffic else []

    # torch, in its own interpreter, first (nothing else on the GPU meanwhile)
    torch_backends = [b for b in backends if b in TORCH_BACKENDS]
    if torch_backends:
        measurements = [{"backend": b, "batch": bs, "seq": s, "modes": ["device", "e2e"]}
                        for b in torch_backends for bs, s in shapes]
        if simulate_traffic:  # every FP16 torch backend through the same bucketed batching as the engines
            measurements += [{"backend": b, "batch": bs, "seq": bucket, "modes": ["e2e"], "sim": True}
                             for b in torch_backends if b != "torch-fp32" for bucket in buckets
                             for bs in sim.batch_sizes]
        # the checkpoint the export was made from (an absolute path, its weights' hash checked by the worker)
        weights = {k[len("weights/"):]: v for k, v in record["sha256"].items() if k.startswith("weights/")}
        plan = {"checkpoint": record.get("checkpoint") or os.path.abspath(config.model.checkpoint or ""),
                "weights_sha256": weights, "vocab_size": vocab,
                "measurements": measurements, "warmup": bcfg.warmup, "iterations": bcfg.iterations,
                "repeats": bcfg.repeats, "seed": 0}
        out = run_torch_worker(config, plan, progress=progress)
        if "error" in out:
            for b in torch_backends:
                skipped[b], missing[b] = out["error"], EXIT_USER
        else:
            device.setdefault("gpu", out.get("device"))
            device["torch"] = out.get("torch")
            device["torch_cuda"] = out.get("cuda")
            memory.update(out.get("memory", {}))
            for b, why in out.get("skipped", {}).items():
                skipped[b], missing[b] = why, EXIT_NO_GPU if "CUDA" in why else EXIT_USER
            results += [r for r in out["results"] if not r.get("sim")]
            device["torch_attention"] = out.get("attention")
            device["torch_compile_seconds"] = out.get("compile_seconds")
            for b in torch_backends if simulate_traffic else []:
                table = {bucket: {r["batch"]: r["ms"] for r in out["results"]
                                  if r.get("sim") and r["backend"] == b and r["seq"] == bucket} for bucket in buckets}
                if b == "torch-fp32" or b in skipped or not all(table.values()):
                    continue
                sims.append((b, table, None))
                if b == "torch-fp16":  # the seed's "before": one queue, every text padded to the longest bucket
                    sims.append(("torch-fp16 padded", {buckets[-1]: table[buckets[-1]]}, buckets[-1]))

    # TensorRT engines, each in a child process (a native crash there is a one-line error, never a result)
    for name, path in engines.items():
        from trtbuild.backends.trt.isolated import call

        out = call(_time_engine, name, path, shapes, sim.batch_sizes if name in sim_engines else None,
                   bcfg.cuda_graph, bcfg.warmup, bcfg.iterations, bcfg.repeats, lengths, buckets, vocab,
                   what="timing {}".format(path))
        results += out["results"]
        skipped.update(out["skipped"])
        memory[name] = out["memory"]
        cuda_graphs[name] = out["graph_status"]
        if out["table"] is not None:
            sims.append((name, out["table"], None))
        progress("{}: measured {} shapes".format(name, len(shapes)))

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
                feeds = sample_inputs(runner.input_names, bs, s, vocab)
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
    info["flops"] = _peak_shares(record, device, results)
    report = BenchReport(config_name=config.model.name, device=device, results=results, simulations=simulations,
                         memory=memory, skipped=skipped, info=info, seconds=round(time.perf_counter() - start, 1),
                         missing=missing)
    if not results:
        error = (NoGpuError if missing and all(c == EXIT_NO_GPU for c in missing.values()) else TrtbuildError)(
            "nothing was measured: {}".format("; ".join("{}: {}".format(k, v) for k, v in skipped.items())
                                              or "no backends selected"))
        raise error
    report.write(report_dir or wd.reports)
    return report


def _peak_shares(record, device, results):
    """Add `peak_share` (of the GPU's dense FP16 peak, or INT8 for the INT8 engine) to every device-mode row of a
    GPU backend; returns what it was computed from, or why not."""
    shape, peak = model_shape(record), peak_tflops(device.get("gpu"))
    if shape is None or peak is None:
        return {"why_not": "no model shape in export.json or the checkpoint's config.json" if shape is None else
                "no data-sheet peak known for GPU {!r}".format(device.get("gpu"))}
    seqs = set()
    for r in results:
        if r["mode"] != "device" or r["backend"] in ("torch-fp32", "ort-cpu") or not r.get("seq_per_s"):
            continue
        precision = "int8" if r["backend"] == "trt-int8" else "fp16"
        r["peak_share"] = round(peak_share(shape, r["seq"], r["seq_per_s"], peak[precision]), 4)
        r["peak_of"] = precision
        seqs.add(r["seq"])
    return {"model_shape": shape, "peak_tflops": peak,
            "gflop_per_sequence": {str(q): round(flops_per_sequence(shape, q) / 1e9, 3) for q in sorted(seqs)},
            "counted": "encoder GEMMs + attention core (trtbuild/bench/flops.py)"}


def _time_engine(name, path, shapes, sim_batches, cuda_graph, warmup, iterations, repeats, lengths, buckets, vocab):
    """(In a child process.) One engine at every shape (device, e2e, device-plain) and, given `sim_batches`, its
    service-time table per bucket x batch; {"results", "table", "memory", "graph_status", "skipped"}."""
    from trtbuild.backends.trt.timer import TrtTimer

    simulate = sim_batches is not None
    results, skipped = [], {}
    timer = TrtTimer(path, cuda_graph=cuda_graph)
    try:
        memory = {"engine_file_bytes": os.path.getsize(path), "activation_bytes": timer.activation_bytes,
                  "gpu_bytes_after_load": timer.memory_bytes}
        work = [(bs, s, "shape") for bs, s in shapes]
        if simulate:
            work += [(bs, b, "sim") for b in buckets for bs in sim_batches]
        table = {b: {} for b in buckets} if simulate else None
        for bs, s, kind in work:
            if kind == "sim" and table is None:
                continue  # an earlier shape of the table fitted no profile
            try:
                if kind == "sim" and timer.varlen:  # real text lengths: this engine does not pad them
                    timer.prepare(sample_bucket_inputs(timer.inputs, bs, s, lengths, buckets, vocab))
                else:
                    timer.prepare(sample_inputs(timer.inputs, bs, s, vocab))
            except TrtbuildError as e:  # a shape the engine's profiles do not hold: say so, go on
                if kind != "sim":
                    skipped["{} B{} S{}".format(name, bs, s)] = str(e)
                    continue
                table = None
                skipped[name + " simulation"] = "batch {} x bucket {}: {}".format(bs, s, e)
                continue
            if kind == "shape":
                steps = [("device", timer.device), ("e2e", timer.e2e)]
                if timer.graph is not None:  # the same run without the graph: what the graph is worth
                    steps.append(("device-plain", timer.device_plain))
                for mode, step in steps:
                    stats = timing_stats(time_calls(step, warmup, iterations, repeats), bs)
                    graphed = timer.graph is not None and mode != "device-plain"
                    results.append(dict(backend=name, batch=bs, seq=s, mode=mode, cuda_graph=graphed, **stats))
            else:  # the service-time table of the simulation: e2e, fewer iterations
                stats = timing_stats(time_calls(timer.e2e, 3, max(10, iterations // 5), 1), bs)
                table[s][bs] = stats["ms"]
        return {"results": results, "table": table, "memory": memory, "graph_status": timer.graph_status,
                "skipped": skipped}
    finally:
        timer.close()
