"""Build logic that needs no GPU: profiles, the TensorRT version path, manifest checks."""

import hashlib
import json
import os

import pytest

from trtbuild.backends.trt.build import build_path
from trtbuild.backends.trt.manifest import EngineMismatchError, check_engine
from trtbuild.backends.trt.profiles import bucket_profiles, config_profiles, pick_profile, profiles_from_lengths
from trtbuild.config import ConfigError, ProfileConfig, config_from_dict
from trtbuild.errors import TrtbuildError


def test_one_profile_per_bucket():
    profiles = bucket_profiles([32, 64, 128, 256], max_batch=64)
    assert [p.to_dict() for p in profiles] == [
        {"min": [1, 1], "opt": [64, 32], "max": [64, 32]},
        {"min": [1, 33], "opt": [64, 64], "max": [64, 64]},
        {"min": [1, 65], "opt": [64, 128], "max": [64, 128]},
        {"min": [1, 129], "opt": [64, 256], "max": [64, 256]},
    ]
    assert bucket_profiles([32], max_batch=64, opt_batch=8)[0].opt == (8, 32)
    fixed = bucket_profiles([32, 64], max_batch=64, fixed_sequence=True)
    assert [p.to_dict() for p in fixed] == [{"min": [1, 32], "opt": [64, 32], "max": [64, 32]},
                                            {"min": [1, 64], "opt": [64, 64], "max": [64, 64]}]


def test_config_profiles_explicit_or_from_buckets():
    config = config_from_dict({"model": {"name": "m"}, "build": {"max_batch": 16, "opt_batch": 8}})
    assert [p.max for p in config_profiles(config, max_length=128)] == [(16, 32), (16, 64), (16, 128)]
    config = config_from_dict({"model": {"name": "m"}, "build": {"profiles": [
        {"min": [1, 1], "opt": [8, 48], "max": [32, 64]}]}})
    assert config_profiles(config, max_length=256) == [ProfileConfig((1, 1), (8, 48), (32, 64))]


def test_pick_profile():
    profiles = bucket_profiles([32, 64, 128], max_batch=64)
    assert pick_profile(profiles, 1, 8) == 0
    assert pick_profile(profiles, 64, 32) == 0
    assert pick_profile(profiles, 3, 33) == 1
    assert pick_profile(profiles, 8, 128) == 2
    assert pick_profile(profiles, 65, 32) is None
    assert pick_profile(profiles, 1, 129) is None


def test_fixed_sequence_profiles_pad_the_batch_to_its_bucket():
    import numpy as np

    from trtbuild.backends.trt.profiles import fit_profile, pad_sequence

    profiles = bucket_profiles([32, 64, 128], max_batch=64, fixed_sequence=True)
    assert fit_profile(profiles, 8, 32) == (0, 32)
    assert fit_profile(profiles, 8, 7) == (0, 32)
    assert fit_profile(profiles, 3, 33) == (1, 64)
    assert fit_profile(profiles, 1, 129) is None and fit_profile(profiles, 65, 32) is None
    assert fit_profile(bucket_profiles([32, 64], max_batch=8), 2, 40) == (1, 40)  # ranges: no padding
    feeds = {"input_ids": np.array([[5, 6, 7]]), "attention_mask": np.array([[1, 1, 0]])}
    padded = pad_sequence(feeds, 5)
    assert padded["input_ids"].tolist() == [[5, 6, 7, 0, 0]] and padded["attention_mask"].tolist() == [[1, 1, 0, 0, 0]]
    with pytest.raises(TrtbuildError, match="no attention_mask"):
        pad_sequence({"input_ids": np.array([[5]])}, 4)


def test_static_batch_profiles_come_first_and_serve_exactly_their_batch():
    config = config_from_dict({"model": {"name": "m"}, "build": {"max_batch": 64, "static_batches": [64]}})
    profiles = config_profiles(config, max_length=64)
    assert [(p.min, p.max) for p in profiles] == [((64, 32), (64, 32)), ((1, 32), (64, 32)),
                                                  ((64, 64), (64, 64)), ((1, 64), (64, 64))]
    assert pick_profile(profiles, 64, 64) == 2 and pick_profile(profiles, 63, 64) == 3
    with pytest.raises(ConfigError, match="static_batches\\[0\\]: must be between 1 and max_batch 16"):
        config_from_dict({"model": {"name": "m"}, "build": {"max_batch": 16, "static_batches": [64]}})


def test_default_build_fixes_the_sequence_per_bucket():
    config = config_from_dict({"model": {"name": "m"}, "build": {"max_batch": 16}})
    assert [(p.min, p.max) for p in config_profiles(config, max_length=64)] == [((1, 32), (16, 32)), ((1, 64), (16, 64))]
    config = config_from_dict({"model": {"name": "m"}, "build": {"max_batch": 16, "fixed_sequence": False}})
    assert [p.min for p in config_profiles(config, max_length=64)] == [(1, 1), (1, 33)]


def test_profiles_from_corpus_lengths():
    lengths = list(range(10, 110))  # 10..109 tokens
    edges, profiles = profiles_from_lengths(lengths, max_length=128, max_batch=32)
    assert edges == [64, 96, 112]  # quantiles 0.5, 0.8, 0.95 (and 1.0), rounded up to multiples of 8
    assert [p.max for p in profiles] == [(32, 64), (32, 96), (32, 112)]
    assert profiles_from_lengths(lengths, max_length=96, max_batch=32)[0] == [64, 96]  # capped
    with pytest.raises(TrtbuildError, match="no lengths"):
        profiles_from_lengths([], 128, 8)


@pytest.mark.parametrize("version, precision, onnx, flags, typed, cast", [
    ("8.6.0", "fp16", "model.onnx", ("FP16",), False, False),
    ("8.6.0", "int8", "model.qdq.onnx", ("FP16", "INT8"), False, False),
    ("10.13.2", "int8", "model.qdq.onnx", ("FP16", "INT8"), False, False),
    ("11.0.0", "fp16", "model.onnx", (), True, True),
    ("11.1.0", "int8", "model.qdq.onnx", (), True, True),
])
def test_build_path_by_tensorrt_version(version, precision, onnx, flags, typed, cast):
    path = build_path(version, precision)
    assert (path.onnx, path.flags, path.strongly_typed, path.cast_fp16) == (onnx, flags, typed, cast)


def test_build_path_rejects_unknown_precision():
    with pytest.raises(TrtbuildError, match="unknown precision 'int4'"):
        build_path("8.6.0", "int4")


def test_fp8_needs_tensorrt_10_and_builds_strongly_typed_from_the_fp8_model():
    with pytest.raises(TrtbuildError, match="FP8 engines need TensorRT >= 10 .* TensorRT 8.6.0 has no FP8"):
        build_path("8.6.0", "fp8")
    for version in ("10.13.3", "11.4.0"):
        path = build_path(version, "fp8")
        assert (path.onnx, path.flags, path.strongly_typed, path.cast_fp16) == ("model.fp8.onnx", (), True, True)


@pytest.fixture
def fake_engine(tmp_path):
    """An engine file and its manifest entry, as build writes them."""
    d = tmp_path / "engines" / "sm90-trt8.6.0"
    d.mkdir(parents=True)
    data = b"not a real engine, but bytes with a hash" * 10
    (d / "fp16.engine").write_bytes(data)
    manifest = {"engines": {"fp16.engine": {
        "precision": "fp16", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "tensorrt": "8.6.0",
        "engine_bytes": len(data), "sha256": {"engine": hashlib.sha256(data).hexdigest()},
        "profiles": [{"min": [1, 1], "opt": [64, 32], "max": [64, 32]}]}}}
    (d / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return str(d / "fp16.engine")


H100 = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def test_manifest_accepts_a_matching_engine(fake_engine):
    assert check_engine(fake_engine, H100, "8.6.0")["precision"] == "fp16"


def test_manifest_refuses_another_gpu(fake_engine):
    with pytest.raises(EngineMismatchError) as info:
        check_engine(fake_engine, {"name": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0"}, "8.6.0")
    assert str(info.value) == ("engine {} was built for compute capability 9.0 (NVIDIA H100 80GB HBM3), this GPU is "
                               "8.0 (NVIDIA A100-SXM4-40GB); rebuild it on this machine: trtbuild build WORKDIR"
                               .format(fake_engine))


def test_manifest_refuses_another_tensorrt(fake_engine):
    with pytest.raises(EngineMismatchError, match="built with TensorRT 8.6.0, this is TensorRT 10.13.2"):
        check_engine(fake_engine, H100, "10.13.2")


def test_truncated_or_corrupt_engine_refused(fake_engine):
    with open(fake_engine, "r+b") as f:
        f.truncate(100)
    with pytest.raises(EngineMismatchError, match="is corrupt or truncated \\(100 bytes, manifest says 400\\)"):
        check_engine(fake_engine, H100, "8.6.0")


def test_edited_manifest_refused(fake_engine):
    path = os.path.join(os.path.dirname(fake_engine), "manifest.json")
    manifest = json.load(open(path))
    manifest["engines"]["fp16.engine"]["compute_capability"] = "8.6"
    json.dump(manifest, open(path, "w"))
    with pytest.raises(EngineMismatchError, match="built for compute capability 8.6"):
        check_engine(fake_engine, H100, "8.6.0")


def test_engine_without_manifest_entry(fake_engine, tmp_path):
    other = os.path.join(os.path.dirname(fake_engine), "int8.engine")
    open(other, "wb").write(b"x")
    with pytest.raises(EngineMismatchError, match="has no entry in .*manifest.json; rebuild it on this machine: "
                                                  "trtbuild build WORKDIR --int8"):
        check_engine(other, H100, "8.6.0")


def test_build_without_tensorrt_exits_3(tiny_checkpoint, tmp_path):
    from click.testing import CliRunner

    from trtbuild.cli import cli

    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    work = str(tmp_path / "w")
    assert CliRunner().invoke(cli, ["export", tiny_checkpoint, "-o", work]).exit_code == 0
    result = CliRunner().invoke(cli, ["build", work])
    assert result.exit_code == 3
    assert result.stderr.startswith("Error: TensorRT is not installed here; run build on the GPU machine")
    result = CliRunner().invoke(cli, ["build", work, "--fp8", "--no-fp16"])  # refused before any engine is built
    assert result.exit_code == 1 and "has no model.fp8.onnx; run `trtbuild calibrate" in result.stderr


def test_layer_precision_from_inspector_entries():
    from trtbuild.backends.trt.inspect import _layer_precision

    assert _layer_precision({"Outputs": [{"Format/Datatype": "Row major linear Int8 format"}]}) == "int8"
    assert _layer_precision({"Outputs": [{"Format/Datatype": "Channel major FP16 format (kHWC8)"}]}) == "fp16"
    # TensorRT 8.6 with dynamic shapes: the encoder is one Myelin node whose formats are not reported
    myelin = {"LayerType": "Myelin", "Outputs": [{"Format/Datatype": "N/A due to dynamic shapes"}]}
    assert _layer_precision(myelin) == "myelin"
    assert _layer_precision("a layer name only (ProfilingVerbosity below DETAILED)") == "other"


def test_fit_feeds_pads_to_the_profile_or_says_which_profiles_exist():
    import numpy as np

    from trtbuild.backends.trt.profiles import fit_feeds

    profiles = bucket_profiles([32, 64], max_batch=8, fixed_sequence=True)
    feeds = {"input_ids": np.ones((2, 40), dtype=np.int64), "attention_mask": np.ones((2, 40), dtype=np.int64)}
    index, padded = fit_feeds(profiles, feeds, ["input_ids", "attention_mask"])
    assert index == 1 and padded["input_ids"].shape == (2, 64) and padded["attention_mask"][:, 40:].sum() == 0
    with pytest.raises(TrtbuildError, match=r"batch 9 x seq 40 fits none of the engine's profiles \(\(1, 32\)\.\.\(8, 32\)"):
        fit_feeds(profiles, {k: np.ones((9, 40), dtype=np.int64) for k in feeds}, ["input_ids", "attention_mask"])


class _FakeTrt:
    """A stand-in `tensorrt` for build_engine (engines are bytes). Strict: only what build_engine may touch."""

    __version__ = "8.6.0"

    class Logger:
        VERBOSE, ERROR = 0, 3

        def __init__(self, level):
            pass

    class MemoryPoolType:
        WORKSPACE = "workspace"

    class ProfilingVerbosity:
        DETAILED = "detailed"


class _FakeProfile(dict):
    def add(self, name, **shapes):
        self[name] = shapes


@pytest.fixture
def fake_build(tiny_checkpoint, tmp_path, monkeypatch):
    """build_engine on the CPU: an exported work directory, a stand-in TensorRT, and Polygraphy's builder steps
    replaced by one that hands out engine bytes in turn (each call records the timing cache it was offered)."""
    import sys
    import types

    import trtbuild.backends.trt.build as build
    from trtbuild.config import default_config, with_overrides
    from trtbuild.export import export_onnx

    work = str(tmp_path / "w")
    export_onnx(with_overrides(default_config("t"), checkpoint=tiny_checkpoint, workdir=work))
    calls = []

    def builder(engines, bad=()):
        trt = _FakeTrt()
        monkeypatch.setattr(build, "import_tensorrt", lambda: trt)

        def selftest(files, profiles, varlen, vocab_size):  # in-process, as the child would: bad bytes crash
            for f in files:
                if open(f, "rb").read() in bad:
                    return {"passed": False, "why": "TensorRT crashed (SIGSEGV) while testing {}".format(f)}
            return {"passed": True, "runs": sum(len(p) + 1 for p in profiles), "layers": {"myelin": len(files)}}

        monkeypatch.setattr(build, "selftest", selftest)
        monkeypatch.setattr(build, "gpu_info", lambda: dict(H100))
        poly = types.ModuleType("polygraphy.backend.trt")
        poly.CreateConfig = lambda **kw: kw
        poly.NetworkFromOnnxPath = lambda path, **kw: path
        poly.Profile = _FakeProfile
        for name in ("polygraphy", "polygraphy.backend"):
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
        monkeypatch.setitem(sys.modules, "polygraphy.backend.trt", poly)

        def engine_bytes(network, config, save_timing_cache):
            calls.append(config["load_timing_cache"])
            open(save_timing_cache, "wb").write(b"cache")
            return (lambda: engines[len(calls) - 1])

        poly.EngineBytesFromNetwork = engine_bytes
        return with_overrides(default_config("t"), workdir=work)

    return builder, calls, work


def test_build_tests_every_profile_and_falls_back_to_one_plan_per_profile(fake_build):
    from trtbuild.backends.trt.build import build_engine

    builder, calls, work = fake_build
    # the default config's buckets clipped to the tiny model's 128 positions: 3 profiles
    config = builder([b"one plan", b"p0", b"p1", b"p2"], bad=[b"one plan"])
    arch = os.path.join(work, "engines", "sm90-trt8.6.0")
    cache = os.path.join(arch, "timing.cache")
    os.makedirs(arch)
    open(cache, "wb").write(b"old cache")
    open(os.path.join(arch, "fp16.p7.engine"), "wb").write(b"a part of an older build")
    notes = []
    result = build_engine(config, progress=notes.append)
    assert calls == [cache, None, None, None]  # the later plans do not load the cache that led to the first
    assert any("fails on its profiles (TensorRT crashed (SIGSEGV)" in n for n in notes)
    entry = json.load(open(result.manifest))["engines"]["fp16.engine"]
    assert entry["recipe"] == "one-plan-per-profile" and entry["build_attempts"] == 2
    assert [t["passed"] for t in entry["recipes_tried"]] == [False, True] and entry["timing_cache_warm"] is False
    assert [p["file"] for p in entry["files"]] == ["fp16.engine", "fp16.p1.engine", "fp16.p2.engine"]
    assert [p["profiles"] for p in entry["files"]] == [[0], [1], [2]]
    for part, data in zip(entry["files"], (b"p0", b"p1", b"p2")):
        assert open(os.path.join(arch, part["file"]), "rb").read() == data and part["bytes"] == len(data)
    assert sorted(f for f in os.listdir(arch) if f.endswith(".engine")) == \
        ["fp16.engine", "fp16.p1.engine", "fp16.p2.engine"]  # the older build's part is gone, no temp file stays
    assert not [f for f in os.listdir(arch) if f.startswith(".")]
    assert result.engine_bytes == 6
    check_engine(os.path.join(arch, "fp16.engine"))  # every part matches the manifest
    with open(os.path.join(arch, "fp16.p2.engine"), "ab") as f:
        f.write(b"!")
    with pytest.raises(EngineMismatchError, match=r"corrupt or truncated \(fp16.p2.engine: 3 bytes, manifest says 2\)"):
        check_engine(os.path.join(arch, "fp16.engine"))


def test_build_gives_up_when_no_recipe_runs_every_profile(fake_build):
    from trtbuild.backends.trt.build import build_engine

    builder, calls, work = fake_build
    config = builder([b"one", b"p0", b"p1", b"p2"], bad=[b"one", b"p1"])
    with pytest.raises(TrtbuildError, match=r"built no fp16 engine whose every profile runs \(one-plan: TensorRT "
                                            r"crashed .*; one-plan-per-profile: .*\); use build.backend plugins"):
        build_engine(config)
    engines = os.path.join(work, "engines")
    assert not any(f.endswith(".engine") or f.endswith(".tmp") or f == "manifest.json"
                   for _, _, fs in os.walk(engines) for f in fs)


def test_runner_context_refused_with_one_line():
    from trtbuild.backends.trt.engine import create_context

    class Engine:
        def create_execution_context(self):
            return None

    with pytest.raises(EngineMismatchError, match="could not create an execution context for x.engine .*rebuild it"):
        create_context(Engine(), "x.engine")
