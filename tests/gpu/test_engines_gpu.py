"""GPU suite: real TensorRT builds of an exported tiny BERT, run on the device with the staged TensorRT:

    /opt/torch/.venv/bin/python -m trtbuild export CKPT -o $W ... && ... calibrate $W ...
    TRTBUILD_GPU_WORKDIR=$W PYTHONPATH=$PWD trtpy -m pytest -m gpu tests

(export and calibrate need torch/transformers, which the TensorRT Python lacks, so the work
directory is prepared first; see README "Where things run").
"""

import json
import os
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

WORKDIR = os.environ.get("TRTBUILD_GPU_WORKDIR")
# build.backend plugins needs attention heads 64 wide (TensorRT 8.6's fused attention kernels): a second tiny model
WORKDIR64 = os.environ.get("TRTBUILD_GPU_WORKDIR64")


def _build_copy(tmp_path_factory, workdir, skip_reason, **build):
    """FP16 + INT8 engines (buckets 16/32/64, batch <= 8) built in a copy of a prepared work directory."""
    if not workdir or not os.path.isfile(os.path.join(workdir, "model.qdq.onnx")):
        pytest.skip(skip_reason)
    from trtbuild.backends.trt.build import build_engines
    from trtbuild.config import BuildConfig, DataConfig, default_config, with_overrides

    work = str(tmp_path_factory.mktemp("gpu") / "work")
    shutil.copytree(workdir, work, ignore=shutil.ignore_patterns("engines"))
    config = with_overrides(default_config("gpu"), workdir=work).replace(
        data=DataConfig(buckets=(16, 32, 64)), build=BuildConfig(max_batch=8, workspace_mib=1024, **build))
    return config, work, build_engines(config, int8=True).results


def _assert_match_ort(work, results):
    """Each engine's logits against ONNX Runtime FP32 on every profile, padded rows included."""
    from trtbuild.backends.ort import OrtRunner
    from trtbuild.backends.trt.runner import TrtRunner

    ort = OrtRunner(os.path.join(work, "model.onnx"))
    for r, tol in zip(results, (0.02, 0.25)):
        with TrtRunner(r.engine) as trt_runner:
            for batch, seq in ((1, 16), (8, 16), (3, 32), (8, 64), (2, 40)):
                f = feeds(batch, seq, ort.input_names, seed=batch * seq)
                got, ref = trt_runner.infer(f), ort.infer(f)
                assert got.shape == ref.shape
                assert np.abs(got - ref).max() <= tol * (np.abs(ref).max() + 1e-3), (r.precision, batch, seq,
                                                                                     np.abs(got - ref).max())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return _build_copy(tmp_path_factory, WORKDIR, "set TRTBUILD_GPU_WORKDIR to an exported + calibrated work directory")


def feeds(batch, seq, inputs, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 200, size=(batch, seq)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1:, seq // 2:] = 0
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {n: out[n] for n in inputs}


def test_engines_and_manifest(built):
    config, work, results = built
    assert [r.precision for r in results] == ["fp16", "int8"]
    arch = os.path.dirname(results[0].engine)
    assert os.path.basename(arch).startswith("sm") and "-trt" in os.path.basename(arch)
    manifest = json.load(open(os.path.join(arch, "manifest.json")))
    for name in ("fp16.engine", "int8.engine"):
        entry = manifest["engines"][name]
        assert entry["engine_bytes"] == os.path.getsize(os.path.join(arch, name))
        assert len(entry["profiles"]) == 3 and entry["profiles"][2]["max"] == [8, 64]
        assert entry["gpu"] and entry["compute_capability"] and entry["tensorrt"]
    assert manifest["engines"]["int8.engine"]["layers"]  # per-precision layer counts from the inspector
    for name in ("fp16.engine", "int8.engine"):  # every profile ran once in a child before the engine was kept
        entry = manifest["engines"][name]
        assert entry["selftest"]["passed"] and entry["recipes_tried"][-1] == {
            "recipe": entry["recipe"], "passed": True, "why": None}
        assert sum(len(p["profiles"]) for p in entry.get("files", [{"profiles": [0, 1, 2]}])) == 3
    assert "scales" in manifest["engines"]["int8.engine"]["sha256"]


def test_engine_logits_match_ort_on_every_profile(built):
    config, work, results = built
    _assert_match_ort(work, results)


def test_rebuild_offers_the_timing_cache(built):
    """A rebuild loads the architecture's timing cache. (TensorRT 8.6 compiles BERT into Myelin nodes
    and rejects its own saved Myelin cache, so this records the offer, not a speed-up.)"""
    from trtbuild.backends.trt.build import build_engine

    config, work, results = built
    again = build_engine(config, "fp16")
    entry = json.load(open(again.manifest))["engines"]["fp16.engine"]
    assert entry["timing_cache_offered"] and not results[0].timing_cache_warm
    # the cache is loaded when the first recipe's engine passes its self-test (later recipes build without it)
    assert again.timing_cache_warm == (entry["build_attempts"] == 1)


def test_mismatched_manifest_and_truncated_engine_refused(built, tmp_path):
    from trtbuild.backends.trt.manifest import EngineMismatchError
    from trtbuild.backends.trt.runner import TrtRunner

    config, work, results = built
    arch = os.path.dirname(results[0].engine)
    copy = str(tmp_path / os.path.basename(arch))
    shutil.copytree(arch, copy)
    manifest_path = os.path.join(copy, "manifest.json")
    manifest = json.load(open(manifest_path))
    manifest["engines"]["fp16.engine"]["compute_capability"] = "8.0"
    json.dump(manifest, open(manifest_path, "w"))
    with pytest.raises(EngineMismatchError, match="built for compute capability 8.0"):
        TrtRunner(os.path.join(copy, "fp16.engine"))
    with open(os.path.join(copy, "int8.engine"), "r+b") as f:
        f.truncate(1000)
    with pytest.raises(EngineMismatchError, match="corrupt or truncated"):
        TrtRunner(os.path.join(copy, "int8.engine"))


def test_inspect_engine(built):
    from trtbuild.backends import inspect_artifact

    config, work, results = built
    info = inspect_artifact(results[1].engine).to_dict()
    assert info["profiles"] == 3
    inputs = [t for t in info["tensors"] if t["mode"] == "INPUT"]
    assert inputs and all(len(t["profiles"]) == 3 for t in inputs)
    assert info["layers"]


def test_bench_times_both_engines_beside_ort(built, tmp_path):
    from trtbuild.bench import benchmark
    from trtbuild.config import BenchConfig

    config, work, results = built
    config = config.replace(bench=BenchConfig(shapes=((1, 16), (8, 64)), backends=("trt-fp16", "trt-int8", "ort-cpu"),
                                              warmup=2, iterations=5, repeats=2, ort_iterations=1))
    report = benchmark(config, simulate_traffic=False, report_dir=str(tmp_path))
    for backend in ("trt-fp16", "trt-int8"):
        for batch, seq in ((1, 16), (8, 64)):
            for mode in ("device", "e2e"):
                r = report.lookup(backend, batch, seq, mode)
                assert r and r["ms"] > 0 and r["iterations"] == 10, (backend, batch, seq, mode)
        assert report.memory[backend]["engine_file_bytes"] == os.path.getsize(
            os.path.join(os.path.dirname(results[0].engine), backend.split("-")[1] + ".engine"))
    assert report.device["tensorrt"] and report.device["gpu"]
    assert report.info["cuda_graph"] == {"enabled": True, "engines": {"trt-fp16": True, "trt-int8": True}}
    assert report.lookup("trt-fp16", 8, 64, "device-plain")["ms"] > 0  # the same shape without the graph
    assert os.path.isfile(report.paths["json"])


def test_bench_measures_the_strongest_torch_peer_and_the_share_of_peak(built, tmp_path):
    """torch.compile with CUDA graphs (reduce-overhead) beside eager FP16 and the engine, in one run; the ratio is
    taken against the faster of the two; the engine's row says what share of the GPU's FP16 peak it uses."""
    from trtbuild.bench import benchmark
    from trtbuild.config import BenchConfig

    config, work, results = built
    config = config.replace(bench=BenchConfig(shapes=((8, 64),), warmup=3, iterations=10, repeats=1,
                                              backends=("trt-fp16", "torch-fp16", "torch-compile-reduce-overhead-fp16")))
    report = benchmark(config, simulate_traffic=False, report_dir=str(tmp_path))
    assert report.skipped == {} and report.exit_code == 0, report.skipped
    peers = {b: report.lookup(b, 8, 64)["ms"] for b in ("torch-fp16", "torch-compile-reduce-overhead-fp16")}
    assert report.device["torch_compile_seconds"]["torch-compile-reduce-overhead-fp16"]["b8xs64"] > 0
    row = report.ratios()["b8xs64"]
    assert row["best_torch"] == min(peers, key=peers.get)
    assert row["fp16_vs_best_torch"] == pytest.approx(min(peers.values()) / report.lookup("trt-fp16", 8, 64)["ms"],
                                                      rel=1e-2)
    if report.info["flops"].get("peak_tflops"):  # a GPU with a known data-sheet peak (the H200 is one)
        assert 0 < report.lookup("trt-fp16", 8, 64)["peak_share"] < 1


@pytest.fixture(scope="module")
def plugin_built(tmp_path_factory):
    """build.backend plugins: TensorRT's BERT plugins (needs the real cuBLAS: WITH_CUBLAS=1 staging)."""
    return _build_copy(tmp_path_factory, WORKDIR64, "set TRTBUILD_GPU_WORKDIR64 to an exported + calibrated work "
                       "directory of a model with 64-wide heads", backend="plugins")


def test_plugin_engines_match_ort(plugin_built):
    """The plugin network (fused attention, skip-LayerNorm) gives the ONNX model's logits, padded rows included."""
    config, work, results = plugin_built
    manifest = json.load(open(os.path.join(os.path.dirname(results[0].engine), "manifest.json")))
    for name in ("fp16.engine", "int8.engine"):
        entry = manifest["engines"][name]
        assert entry["backend"] == "plugins" and entry["source"].endswith("model.safetensors")
        assert entry["sha256"]["weights"]
    _assert_match_ort(work, results)


@pytest.fixture(scope="module")
def varlen_built(tmp_path_factory):
    """build.varlen: the variable-length BERT plugins on packed batches (one profile, no padding)."""
    return _build_copy(tmp_path_factory, WORKDIR64, "set TRTBUILD_GPU_WORKDIR64 to an exported + calibrated work "
                       "directory of a model with 64-wide heads", backend="plugins", varlen=True)


def test_varlen_engines_match_ort(varlen_built):
    """Packed on the host, the variable-length engines give the ONNX model's logits for padded batches; bench's
    timer runs them at a full shape and at the simulation's real text lengths."""
    from trtbuild.backends.trt.timer import TrtTimer
    from trtbuild.bench.simulate import sample_bucket_inputs as _sample_bucket_inputs
    from trtbuild.bench.timing import sample_inputs as _sample_inputs

    config, work, results = varlen_built
    manifest = json.load(open(os.path.join(os.path.dirname(results[0].engine), "manifest.json")))
    for name in ("fp16.engine", "int8.engine"):
        entry = manifest["engines"][name]
        assert entry["varlen"] and entry["engine_inputs"] == ["input_ids", "segment_ids", "cu_seqlens", "max_seqlen"]
        assert entry["profiles"] == [{"min": [1, 1], "opt": [8, 32], "max": [8, 64]}]
    _assert_match_ort(work, results)
    timer = TrtTimer(results[0].engine)
    try:
        assert timer.varlen and timer.inputs == manifest["engines"]["fp16.engine"]["inputs"]
        timer.prepare(_sample_inputs(timer.inputs, 8, 64, 1000))
        timer.device()
        timer.prepare(_sample_bucket_inputs(timer.inputs, 8, 32, [5, 20, 31, 40], [16, 32, 64], 1000))
        timer.e2e()
        assert timer.host["logits"].shape[0] == 8
    finally:
        timer.close()


def _assert_graph_replays_the_engine(engine, shapes):
    """bench's CUDA graph (captured per shape) gives the plain enqueue's logits, also after new token ids are
    copied into the same buffers: the graph reads its inputs, it did not bake them in."""
    from trtbuild.backends.trt.timer import TrtTimer
    from trtbuild.bench.simulate import sample_bucket_inputs as _sample_bucket_inputs
    from trtbuild.bench.timing import sample_inputs as _sample_inputs

    graphed, plain = TrtTimer(engine, cuda_graph=True), TrtTimer(engine)
    try:
        for batch, seq in shapes:
            f = (_sample_bucket_inputs(graphed.inputs, batch, seq, [5, 20, 31, 40, 64], [16, 32, 64], 1000)
                 if graphed.varlen else _sample_inputs(graphed.inputs, batch, seq, 1000))
            graphed.prepare(f)
            plain.prepare(f)
            assert graphed.graph is not None, graphed.graph_error
            assert graphed.graph_status is True and plain.graph_status is False and plain.graph is None
            for seed in (0, 1):
                if seed:
                    ids = np.random.default_rng(seed).integers(5, 900, size=graphed.host["input_ids"].shape)
                    graphed.host["input_ids"][...] = ids
                    plain.host["input_ids"][...] = ids
                graphed.e2e()
                plain.e2e()
                got, ref = graphed.host["logits"], plain.host["logits"]
                assert got.shape == ref.shape and np.abs(got.astype(np.float32) - ref).max() <= 1e-3, (batch, seq, seed)
            graphed.device()
            graphed.device_plain()
    finally:
        graphed.close()
        plain.close()


def test_cuda_graph_replays_onnx_engines(built):
    config, work, results = built
    for r in results:
        _assert_graph_replays_the_engine(r.engine, ((1, 16), (8, 64), (3, 32)))


def test_cuda_graph_replays_plugin_and_varlen_engines(plugin_built, varlen_built):
    for config, work, results in (plugin_built, varlen_built):
        for r in results:
            _assert_graph_replays_the_engine(r.engine, ((8, 64), (2, 32)))
