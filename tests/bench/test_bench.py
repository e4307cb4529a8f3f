"""trtbuild bench on the CPU: timing statistics, the seed's dynamic batching on known service times, and a
real run of ONNX Runtime and torch (FP32, in a subprocess, as on the GPU machine) on a tiny model."""

import json
import os

import pytest
from click.testing import CliRunner

from trtbuild.backends.trt.cuda import CudaGraph
from trtbuild.bench.flops import flops_per_sequence, model_shape, peak_share, peak_tflops
from trtbuild.bench.report import BenchReport
from trtbuild.bench.simulate import arrivals, run_simulation, service_ms, simulate, sustained_rate
from trtbuild.bench.timing import percentile, time_calls, timing_stats
from trtbuild.cli import cli
from trtbuild.config import SimulateConfig, default_config, with_overrides
from trtbuild.export import export_onnx

SIM = SimulateConfig()
BUCKETS = [32, 64, 128, 256]


def flat_table(ms_per_batch=1.0, per_text=0.0):
    """A service-time table: a fixed cost per batch plus a cost per text, the same in every bucket."""
    return {b: {n: ms_per_batch + per_text * n * b / 128 for n in (1, 8, 64)} for b in BUCKETS}


def test_percentile_and_timing_stats():
    assert percentile([3, 1, 2], 50) == 2
    assert percentile([0, 10], 99) == pytest.approx(9.9)
    stats = timing_stats([[0.010, 0.012, 0.011], [0.020, 0.021, 0.022]], batch=64)
    assert stats["repeat_ms"] == [11.0, 21.0]
    assert stats["ms"] == pytest.approx(16.0)  # median of the repeats' medians
    assert stats["seq_per_s"] == pytest.approx(64 / 0.016, rel=1e-3)
    assert stats["iterations"] == 6 and stats["p99_ms"] <= 22.0


def test_time_calls_warms_up_then_times_every_iteration():
    calls = []
    ticks = iter(range(1000))
    samples = time_calls(lambda: calls.append(1), warmup=2, iterations=3, repeats=2, clock=lambda: next(ticks))
    assert len(calls) == 2 + 3 * 2
    assert samples == [[1, 1, 1], [1, 1, 1]]


def test_service_time_is_interpolated_between_measured_batches():
    table = {32: {1: 1.0, 8: 2.0, 64: 9.0}}
    assert service_ms(table, 32, 8) == 2.0
    assert service_ms(table, 32, 36) == pytest.approx(5.5)
    assert service_ms(table, 32, 128) == pytest.approx(18.0)


def test_lone_requests_wait_for_the_timeout_then_go():
    # two requests far apart: each waits the 20 ms timeout (short of min batch 8), then takes 1 ms
    result = simulate([(0.0, 10), (1.0, 100)], flat_table(1.0), BUCKETS, SIM)
    assert result["latency_ms"] == pytest.approx([21.0, 21.0])
    assert result["batches"] == 2


def test_a_bucket_with_min_batch_goes_at_once():
    stream = [(0.001 * i, 20) for i in range(8)]  # eight short texts, 1 ms apart
    result = simulate(stream, flat_table(2.0), BUCKETS, SIM)
    assert result["batches"] == 1
    assert max(result["latency_ms"]) == pytest.approx(7.0 + 2.0)  # the first waited for the eighth


def test_buckets_keep_lengths_apart_and_padding_to_max_does_not():
    stream = [(0.0001 * i, 20 if i % 2 else 200) for i in range(16)]
    apart = simulate(stream, flat_table(1.0), BUCKETS, SIM)
    assert apart["batches"] == 2 and apart["bucket_share"] == {"32": 0.5, "64": 0.0, "128": 0.0, "256": 0.5}
    together = simulate(stream, flat_table(1.0), [256], SIM)
    assert together["bucket_share"] == {"256": 1.0} and together["batches"] == 2  # 8 go as soon as they are there


def test_sustained_rate_follows_the_speed_of_the_backend():
    lengths = [20, 40, 90, 100, 120, 200]
    sim = SimulateConfig(requests=2000)
    slow = sustained_rate(lengths, flat_table(1.0, per_text=0.5), BUCKETS, sim)
    fast = sustained_rate(lengths, flat_table(0.5, per_text=0.1), BUCKETS, sim)
    assert 0 < slow < fast
    # at the sustained rate P99 is within the window, at twice the rate it is not
    for rate, within in ((slow, True), (2 * slow, False)):
        res = simulate(arrivals(rate, lengths, sim.requests, sim.seed), flat_table(1.0, per_text=0.5), BUCKETS, sim)
        assert (percentile(res["latency_ms"], 99) <= sim.window_ms) is within


def test_run_simulation_padded_to_max_is_slower_than_buckets():
    lengths = [20] * 50 + [40] * 30 + [100] * 15 + [250] * 5
    table = {b: {n: 0.2 + 0.02 * n * b / 32 for n in (1, 8, 64)} for b in BUCKETS}
    sim = SimulateConfig(requests=2000, rate=2000)
    bucketed = run_simulation("engine", table, BUCKETS, lengths, sim)
    padded = run_simulation("padded", {256: table[256]}, BUCKETS, lengths, sim, padded_to=256)
    assert padded["buckets"] == [256] and bucketed["buckets"] == BUCKETS
    assert bucketed["sustained_rate"] > 2 * padded["sustained_rate"]
    assert len(bucketed["latency_cdf_ms"]) == 201 and bucketed["latency_cdf_ms"] == sorted(bucketed["latency_cdf_ms"])


# ---------------------------------------------------------------------------------------------
# The peers at their best: ratios against the fastest torch at each shape, shares of the GPU's peak

BERT_BASE = {"num_hidden_layers": 12, "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12}


def test_flops_per_sequence_and_peak_share_of_bert_base_on_hopper():
    assert flops_per_sequence(BERT_BASE, 128) / 1e9 == pytest.approx(22.35, abs=0.01)
    h200, pcie = peak_tflops("NVIDIA H200"), peak_tflops("NVIDIA H100 PCIe")
    assert (h200["fp16"], h200["int8"]) == (989.0, 1979.0) and peak_tflops("NVIDIA H100 80GB HBM3") == {
        **h200, "gpu": "H100 SXM"}
    assert pcie["fp16"] == 756.0 and peak_tflops("Some GPU") is None and peak_tflops(None) is None
    # issue 18's figure: BERT-base INT8 at B64 S128 in 2.62 ms on the H200 is 27.5 % of the INT8 peak
    assert peak_share(BERT_BASE, 128, 64 / 2.62e-3, h200["int8"]) == pytest.approx(0.275, abs=0.002)


def test_model_shape_from_the_export_record_or_the_checkpoint(tmp_path):
    assert model_shape({"model_shape": BERT_BASE}) == BERT_BASE
    (tmp_path / "config.json").write_text(json.dumps(dict(BERT_BASE, vocab_size=99)), encoding="utf-8")
    assert model_shape({"checkpoint": str(tmp_path)}) == BERT_BASE
    assert model_shape({"checkpoint": str(tmp_path / "gone")}) is None
    (tmp_path / "config.json").write_text(json.dumps(dict(BERT_BASE, hidden_size="wide")), encoding="utf-8")
    assert model_shape({"checkpoint": str(tmp_path), "model_shape": {"hidden_size": None}}) is None


def test_each_gpu_row_gets_its_share_of_the_peak_it_runs_at():
    from trtbuild.bench import _peak_shares

    rows = [_row("trt-int8", 2.62), _row("trt-fp16", 2.62), _row("trt-fp16", 2.9, mode="e2e"),
            _row("torch-fp32", 30.0), _row("ort-cpu", 900.0, mode="e2e")]
    info = _peak_shares({"model_shape": BERT_BASE}, {"gpu": "NVIDIA H200"}, rows)
    assert rows[0]["peak_share"] == pytest.approx(0.2759, abs=1e-4) and rows[0]["peak_of"] == "int8"
    assert rows[1]["peak_share"] == pytest.approx(0.552, abs=5e-4) and rows[1]["peak_of"] == "fp16"
    assert all("peak_share" not in r for r in rows[2:])  # e2e, FP32 and the CPU are not measured against a peak
    assert info["gflop_per_sequence"] == {"128": 22.347} and info["peak_tflops"]["gpu"] == "H200 SXM"
    assert "no model shape" in _peak_shares({}, {"gpu": "NVIDIA H200"}, rows)["why_not"]


def _row(backend, ms, batch=64, seq=128, mode="device"):
    return {"backend": backend, "batch": batch, "seq": seq, "mode": mode, "ms": ms, "seq_per_s": batch * 1e3 / ms}


def _sim(backend, rate):
    return {"backend": backend, "sustained_rate": rate,
            "at_rate": {"rate": 8000, "p50_ms": 5.0, "p99_ms": 20.0, "mean_batch": 9.0}, "latency_cdf_ms": [1, 2]}


def test_ratios_are_taken_against_the_fastest_torch_at_each_shape():
    rows = [_row("torch-fp32", 30.0), _row("torch-fp16", 10.0), _row("torch-compile-fp16", 4.0),
            _row("torch-compile-reduce-overhead-fp16", 3.0), _row("torch-compile-max-autotune-fp16", 3.5),
            _row("trt-fp16", 2.0), _row("trt-int8", 1.5), _row("trt-int8", 1.6, mode="device-plain"),
            _row("torch-fp32", 1.0, batch=1), _row("torch-fp16", 5.0, batch=1), _row("torch-compile-fp16", 2.0, batch=1),
            _row("trt-fp16", 0.5, batch=1), _row("trt-int8@bb-full", 1.2)]
    sims = [_sim("trt-int8", 30000.0), _sim("trt-fp16", 24000.0), _sim("torch-fp16", 6000.0),
            _sim("torch-compile-reduce-overhead-fp16", 12000.0), _sim("torch-fp16 padded", 3000.0)]
    report = BenchReport(config_name="m", device={"gpu": "NVIDIA H200"}, results=rows, simulations=sims)
    r = report.ratios()
    big = r["b64xs128"]
    assert big["best_torch"] == "torch-compile-reduce-overhead-fp16"  # never torch FP32, never the slowest peer
    assert big["fp16_vs_best_torch"] == 1.5 and big["int8_vs_best_torch"] == 2.0
    assert big["int8_plain_vs_best_torch"] == pytest.approx(1.875) and big["int8_vs_torch_eager_fp16"] == pytest.approx(6.667)
    assert big["fp16_vs_torch_max_autotune"] == 1.75 and big["fp16_vs_torch_compile"] == 2.0
    small = r["b1xs128"]  # FP32's 1.0 ms does not count: the peers are FP16
    assert small["best_torch"] == "torch-compile-fp16" and small["fp16_vs_best_torch"] == 4.0
    assert big["int8@bb-full_vs_best_torch"] == 2.5 and report.engines() == ["trt-fp16", "trt-int8", "trt-int8@bb-full"]
    assert r["simulation"] == {"best_torch": "torch-compile-reduce-overhead-fp16", "int8_vs_best_torch": 2.5,
                               "int8_vs_torch_fp16_padded": 10.0, "fp16_vs_best_torch": 2.0,
                               "fp16_vs_torch_fp16_padded": 8.0}
    d = report.to_dict()
    assert d["int8_vs_best_torch"] == 2.0 and d["best_torch"] == "torch-compile-reduce-overhead-fp16"
    assert "best_torch torch-compile-reduce-overhead-fp16" in report.table()


# ---------------------------------------------------------------------------------------------
# A real run on the CPU: ONNX Runtime and torch FP32 (subprocess); engines and CUDA backends say why they are absent

@pytest.fixture(scope="module")
def bench_work(tmp_path_factory, chinese_checkpoint):
    root = tmp_path_factory.mktemp("bench")
    work = str(root / "work")
    config = with_overrides(default_config("tiny-zh"), checkpoint=chinese_checkpoint, workdir=work)
    export_onnx(config)
    yaml = root / "bench.yaml"
    yaml.write_text(
        "model: {{name: tiny-zh, checkpoint: {}, workdir: {}}}\n"
        "data: {{buckets: [16, 32, 64], eval: [calibration_data/slang/eval.jsonl]}}\n"
        "bench: {{shapes: [[1, 16], [4, 32]], warmup: 1, iterations: 3, repeats: 2, ort_iterations: 2}}\n".format(
            chinese_checkpoint, work), encoding="utf-8")
    return work, str(yaml)


def invoke(*args):
    return CliRunner().invoke(cli, list(args))


def test_bench_on_cpu_measures_ort_and_torch_and_says_what_it_skipped(bench_work, tmp_path):
    work, config = bench_work
    assert invoke("verify", work, "-c", config, "--candidate", "fp32").exit_code == 0  # caches the eval lengths
    reports = str(tmp_path / "reports")
    result = invoke("bench", work, "-c", config, "--reports", reports)
    assert result.exit_code == 3, result.output  # the GPU backends asked for could not run here: not a success
    assert "B1 S16" in result.stdout and "B4 S32" in result.stdout
    assert "B1 S16" in result.stdout and "B4 S32" in result.stdout
    path = os.path.join(reports, "bench-cpu.json")
    report = json.load(open(path))
    assert report["format"] == "trtbuild-bench/2"
    measured = {(r["backend"], r["batch"], r["seq"], r["mode"]) for r in report["results"]}
    assert measured == {("ort-cpu", 1, 16, "e2e"), ("ort-cpu", 4, 32, "e2e"),
                        ("torch-fp32", 1, 16, "device"), ("torch-fp32", 1, 16, "e2e"),
                        ("torch-fp32", 4, 32, "device"), ("torch-fp32", 4, 32, "e2e")}
    for r in report["results"]:
        assert r["ms"] > 0 and r["seq_per_s"] == pytest.approx(r["batch"] * 1e3 / r["ms"], rel=1e-3, abs=0.06)
        assert r["iterations"] == (2 if r["backend"] == "ort-cpu" else 6)
    assert "no fp16 engine" in report["skipped"]["trt-fp16"] and "no int8 engine" in report["skipped"]["trt-int8"]
    for peer in ("torch-fp16", "torch-compile-fp16", "torch-compile-reduce-overhead-fp16",
                 "torch-compile-max-autotune-fp16"):
        assert "CUDA" in report["skipped"][peer]
    assert report["int8_vs_best_torch"] is None and report["best_torch"] is None and report["simulations"] == []
    assert "no data-sheet peak" in report["info"]["flops"]["why_not"]  # no GPU here
    assert report["info"]["simulate"]["eval_texts"] == 330 and report["info"]["simulate"]["mean_length"] > 5
    assert report["device"]["torch"] and report["device"]["onnxruntime"]
    assert report["info"]["cuda_graph"] == {"enabled": True, "engines": {}}
    assert report["exit_code"] == 3 and report["missing"] == {
        "trt-fp16": 1, "trt-int8": 1, "torch-fp16": 3, "torch-compile-fp16": 3,
        "torch-compile-reduce-overhead-fp16": 3, "torch-compile-max-autotune-fp16": 3}
    shape = json.load(open(os.path.join(work, "export.json")))["model_shape"]  # what bench's FLOPs come from
    assert model_shape({"model_shape": shape}) == shape and shape["num_hidden_layers"] >= 1
    only_cpu = invoke("bench", work, "-c", config, "--reports", reports, "--backend", "ort-cpu", "--no-simulate")
    assert only_cpu.exit_code == 0, only_cpu.output  # every backend asked for was measured
    assert os.path.isfile(os.path.join(reports, "bench-cpu.png"))
    assert sorted(os.listdir(reports)) == ["bench-cpu.json", "bench-cpu.png"]  # nothing half-written


def test_bench_times_engines_of_other_work_directories_in_the_same_run(bench_work, tmp_path):
    import shutil

    work, config = bench_work
    other = tmp_path / "bb-full"
    os.makedirs(str(other / "engines" / "sm90-trt8.6.0"))
    shutil.copy(os.path.join(work, "export.json"), str(other / "export.json"))
    engine = other / "engines" / "sm90-trt8.6.0" / "int8.engine"
    engine.write_bytes(b"plan")
    result = invoke("bench", work, "-c", config, "--backend", "ort-cpu", "--no-simulate", "--engine", str(engine),
                    "--reports", str(tmp_path / "r"))
    assert result.exit_code == 3, result.output  # no TensorRT here: the extra engine could not run, and says so
    report = json.load(open(str(tmp_path / "r" / "bench-cpu.json")))
    assert report["missing"] == {"trt-int8@bb-full": 3} and "trt-int8@bb-full" in report["info"]["backends"]
    for path, message in ((str(other / "model.onnx"), "expected WORKDIR/engines/<target>/fp16.engine"),
                          (str(other / "engines" / "sm90-trt8.6.0" / "fp16.engine"), "no such engine")):
        result = invoke("bench", work, "-c", config, "--backend", "ort-cpu", "--no-simulate", "--engine", path)
        assert result.exit_code == 1 and message in result.stderr, result.output
    record = json.load(open(str(other / "export.json")))
    record["sha256"]["onnx"] = "0" * 64
    (other / "export.json").write_text(json.dumps(record), encoding="utf-8")
    result = invoke("bench", work, "-c", config, "--backend", "ort-cpu", "--no-simulate", "--engine", str(engine))
    assert result.exit_code == 1 and "holds another export" in result.stderr, result.output


def test_bench_bad_input(bench_work, tmp_path):
    work, config = bench_work
    result = invoke("bench", work, "-c", config, "--backend", "trt-int8", "--no-simulate")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error: nothing was measured: trt-int8: no int8 engine")
    result = invoke("bench", work, "-c", config, "--shape", "64by128")
    assert result.exit_code == 2 and "write a shape as BATCHxSEQ" in result.stderr
    fresh = str(tmp_path / "fresh")
    export_onnx(with_overrides(default_config("f"), checkpoint=json.load(open(os.path.join(work, "export.json")))[
        "checkpoint"], workdir=fresh))
    result = invoke("bench", fresh, "-c", config, "--backend", "ort-cpu")
    assert result.exit_code == 1 and "run `trtbuild verify" in result.stderr and "--no-simulate" in result.stderr
    result = invoke("bench", work, "-c", config, "--backend", "torch-fp32", "--no-simulate",
                    "--torch-python", str(tmp_path / "no-python"))
    assert result.exit_code == 1 and "torch interpreter" in result.stderr and "not found" in result.stderr


def test_simulation_ends_at_low_rates_far_into_simulated_time():
    # 20,000 requests at 1/s run ~20,000 s of simulated time: the timeout test must not drift with float rounding
    sim = SimulateConfig(rate=1, timeout_ms=10)
    result = simulate(arrivals(1.0, [20], sim.requests, 0), flat_table(1.0), BUCKETS, sim)
    assert len(result["latency_ms"]) == sim.requests and max(result["latency_ms"]) == pytest.approx(11.0)


def test_sustained_rate_never_exceeds_what_the_gpu_can_serve():
    table = {256: {1: 1.0, 64: 8.24}}  # at best 64 texts per 8.24 ms = 7,767 texts/s
    sim = SimulateConfig()
    rate = sustained_rate([200] * 10, table, [256], sim)
    assert 0.8 * 64 / 8.24e-3 < rate <= 1.02 * 64 / 8.24e-3


def test_bench_without_cuda_graphs_says_so(bench_work, tmp_path):
    work, config = bench_work
    result = invoke("bench", work, "-c", config, "--backend", "ort-cpu", "--no-simulate", "--no-cuda-graph", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["info"]["cuda_graph"] == {"enabled": False, "engines": {}}


class FakeCudart:
    """The five CUDA runtime calls of a graph capture, with an error code to return per call."""

    def __init__(self, **errors):
        self.errors = errors
        self.calls = []

    def __getattr__(self, name):
        import ctypes

        def call(*args):
            self.calls.append(name)
            if name == "cudaStreamEndCapture" and not self.errors.get(name):
                ctypes.cast(args[1], ctypes.POINTER(ctypes.c_void_p))[0] = 0x1000  # the captured graph
            if name == "cudaGraphInstantiateWithFlags" and not self.errors.get(name):
                ctypes.cast(args[0], ctypes.POINTER(ctypes.c_void_p))[0] = 0x2000
            return self.errors.get(name, 0)
        return call


def test_cuda_graph_capture_launch_and_free():
    lib = FakeCudart()
    launches = []
    graph = CudaGraph.capture(0x10, lambda: launches.append(1) or True, lib=lib)
    assert launches == [1] and graph.graph.value == 0x1000 and graph.graph_exec.value == 0x2000
    graph.launch(0x10)
    graph.free()
    graph.free()  # twice is harmless
    assert lib.calls == ["cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGetLastError",
                         "cudaGraphInstantiateWithFlags", "cudaGraphLaunch", "cudaGraphExecDestroy", "cudaGraphDestroy"]


@pytest.mark.parametrize("errors, launched, why", [
    ({"cudaStreamBeginCapture": 900}, True, "could not start (cudaStreamBeginCapture error 900)"),
    ({}, False, "the launch failed while captured"),
    ({"cudaStreamEndCapture": 901}, True, "cudaStreamEndCapture error 901"),
    ({"cudaGraphInstantiateWithFlags": 1}, True, "cudaGraphInstantiateWithFlags error 1"),
])
def test_cuda_graph_capture_failures_leave_capture_mode_and_say_why(errors, launched, why):
    from trtbuild.errors import TrtbuildError

    lib = FakeCudart(**errors)
    with pytest.raises(TrtbuildError, match="CUDA graph capture") as e:
        CudaGraph.capture(0x10, lambda: launched, lib=lib)
    assert why in str(e.value)
    if "cudaStreamBeginCapture" not in errors:
        assert "cudaStreamEndCapture" in lib.calls  # the stream is out of capture mode
        assert lib.calls.count("cudaGraphDestroy") == (0 if "cudaStreamEndCapture" in errors else 1)


def test_cuda_graph_captured_while_another_exception_is_handled_is_kept():
    lib = FakeCudart()
    try:
        raise ValueError("an earlier error being handled")
    except ValueError:
        graph = CudaGraph.capture(0x10, lambda: True, lib=lib)
    assert graph.graph_exec.value == 0x2000 and "cudaGraphDestroy" not in lib.calls
    graph.free()
    assert lib.calls.count("cudaGraphDestroy") == 1


def test_cuda_graph_capture_ends_even_when_the_launch_raises():
    lib = FakeCudart()

    def boom():
        raise RuntimeError("enqueue exploded")
    with pytest.raises(RuntimeError):
        CudaGraph.capture(0x10, boom, lib=lib)
    assert lib.calls == ["cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGetLastError", "cudaGraphDestroy"]


def _cpu_timer():
    """A TrtTimer around stand-ins for the execution context, stream and device buffers (no TensorRT here)."""
    from types import SimpleNamespace

    import numpy as np

    from trtbuild.backends.trt import timer as timer_module

    class Context:
        enqueued = 0

        def set_input_shape(self, name, shape):
            pass

        def get_tensor_shape(self, name):
            return (2, 3)

        def set_tensor_address(self, name, ptr):
            pass

        def execute_async_v3(self, stream):
            self.enqueued += 1
            return True

    class Buffer:
        ptr = 1

        def __init__(self, shape, dtype):
            pass

        def resize(self, shape):
            pass

        def copy_from(self, host, stream):
            pass

        def copy_to(self, host, stream):
            pass

        def free(self):
            pass

    context = Context()
    part = SimpleNamespace(context=context, current=0)

    class Session:
        def fit(self, feeds):  # as EngineSession.fit for a one-profile engine: cast to the engine's dtypes
            return part, 0, {n: np.ascontiguousarray(a.astype(np.int32)) for n, a in feeds.items()}

    timer = timer_module.TrtTimer.__new__(timer_module.TrtTimer)
    timer.cuda = SimpleNamespace(DeviceArray=Buffer)
    timer.session = Session()
    timer.context = context
    timer.stream = SimpleNamespace(ptr=5, synchronize=lambda: None, free=lambda: None)
    timer.varlen, timer.profile = False, 0
    timer.inputs = timer.tensors_in = ["input_ids"]
    timer.outputs = ["logits"]
    timer.dtypes = {"input_ids": np.dtype(np.int32), "logits": np.dtype(np.float32)}
    timer.buffers, timer.host = {}, {}
    timer.cuda_graph, timer.graph, timer.graph_error = True, None, None
    return timer, {"input_ids": np.ones((2, 4), dtype=np.int64)}


def test_trt_timer_replays_its_graph_and_falls_back_when_capture_fails(monkeypatch):
    launched = []

    class Graph:
        freed = 0

        def launch(self, stream):
            launched.append(stream)

        def free(self):
            Graph.freed += 1

    def ok(cls, stream, launch, lib=None):
        assert launch()  # the enqueue, as captured
        return Graph()
    monkeypatch.setattr(CudaGraph, "capture", classmethod(ok))
    timer, feeds = _cpu_timer()
    timer.prepare(feeds)
    timer.prepare(feeds)  # a new shape: the old graph goes, a new one is captured
    assert Graph.freed == 1 and timer.graph_status is True
    enqueued = timer.context.enqueued  # 2 per prepare: one warm enqueue, one captured
    timer.device()
    timer.e2e()
    assert launched == [5, 5] and timer.context.enqueued == enqueued == 4
    timer.device_plain()
    assert timer.context.enqueued == 5

    def broken(cls, stream, launch, lib=None):
        raise RuntimeError("not capturable")  # e.g. an error of TensorRT's own bindings
    monkeypatch.setattr(CudaGraph, "capture", classmethod(broken))
    timer, feeds = _cpu_timer()
    timer.prepare(feeds)
    assert timer.graph is None and timer.graph_status == "CUDA graph capture failed: not capturable"
    timer.device()
    timer.e2e()
    timer.prepare(feeds)  # no second try (nor its warm-up enqueue)
    assert timer.context.enqueued == 3  # warm-up, then device and e2e on the plain enqueue
