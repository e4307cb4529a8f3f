"""`make demo`: run every pipeline step that exists on the default config, and say what was skipped.

    python -m trtbuild.demo --config configs/bert-base-zh.yaml

Re-running is cheap: an export whose weights hash matches the checkpoint is reused.

The `trtbuild.demo` package is the embedded default (not the toolchain): the default model (`model.py`,
`e5convert.py`), the committed corpora (`seeddata.py`), random BERTs for tests and speed work
(`random_bert.py`), and this walk through the pipeline.
"""

import importlib.util
import os
import sys
import time

import click

from trtbuild._util import Command
from trtbuild._util import say as _say
from trtbuild.config import load_config
from trtbuild.errors import TrtbuildError
from trtbuild.workdir import WorkDir, check_calibration, check_export, read_json, sha256_file


def _export_is_current(config):
    """The export record when the work directory holds an intact export of the checkpoint as it is now."""
    try:
        record = check_export(config.workdir)
    except TrtbuildError:
        return None
    for key, digest in record.get("sha256", {}).items():
        if key.startswith("weights/"):
            path = os.path.join(config.model.checkpoint, key[len("weights/"):])
            if not os.path.isfile(path) or sha256_file(path) != digest:
                return None
    return record


def run_demo(config):
    """Export (or reuse) the default model; report artifacts and the steps not run. Returns a summary dict."""
    from trtbuild.export import export_onnx

    start = time.perf_counter()
    summary = {"model": config.model.name, "workdir": config.workdir, "steps": {}}
    if not config.model.checkpoint or not os.path.isfile(os.path.join(config.model.checkpoint, "config.json")):
        raise TrtbuildError("the demo model {} is missing; run `make model` (or `make model-bert-base` for the "
                            "BERT-base shape) first".format(config.model.checkpoint))
    card = os.path.join(config.model.checkpoint, "trtbuild-model.json")
    if os.path.isfile(card):
        info = read_json(card)
        summary["model_eval"] = info.get("eval", {})
        _say("model: {} ({}; vocab {} of {}), made in {:.0f} s".format(
            config.model.checkpoint, info.get("architecture"), info["tokenizer"]["vocab_trimmed"],
            info["tokenizer"]["vocab_full"], info["seconds"]["total"]))
        for name, ev in summary["model_eval"].items():
            _say("  {} eval accuracy (PyTorch FP32): {:.1%} on {} texts".format(name, ev["accuracy"], ev["rows"]))
    record = _export_is_current(config)
    if record is not None:
        _say("export: up to date ({}, exported in {:.1f} s earlier)".format(
            os.path.join(config.workdir, "model.onnx"), record["seconds"]))
        summary["steps"]["export"] = "reused"
    else:
        result = export_onnx(config, force=True, progress=_say)
        record = result.to_dict()
        _say("export: {} in {:.1f} s, max |diff| vs PyTorch {:.3g}".format(result.onnx, result.seconds,
                                                                           result.max_abs_diff))
        summary["steps"]["export"] = "done"
    summary["export_seconds"] = record["seconds"]
    summary["max_abs_diff"] = record["max_abs_diff"]

    # calibrate (CPU, ONNX Runtime): reused while scales.json belongs to this export
    wd = WorkDir(config.workdir)
    scales_path = wd.scales
    try:
        current = check_calibration(wd.root) is not None
    except TrtbuildError:
        current = False
    if current:  # the same export, but a placement the config no longer asks for: calibrate again
        placement = read_json(scales_path).get("placement", {})
        ccfg = config.calibrate
        current = (placement.get("quantize_residual", False) == ccfg.quantize_residual
                   and placement.get("quantize_attention", False) == ccfg.quantize_attention)
    if not config.data.calibration:
        summary["steps"]["calibrate"] = "skipped: the config names no data.calibration corpus"
    elif current:
        _say("calibrate: up to date ({})".format(scales_path))
        summary["steps"]["calibrate"] = "reused"
    else:
        from trtbuild.calibrate.fallback import calibrate_and_check

        result = calibrate_and_check(config, progress=_say, show_bar=sys.stderr.isatty())
        summary["steps"]["calibrate"] = "done"
        summary["calibration_seconds"] = result.seconds
        if result.accuracy:
            summary["accuracy_fp32"] = result.accuracy["fp32"]["accuracy"]
            summary["accuracy_qdq"] = result.accuracy["qdq"]["accuracy"]
            _say("calibrate: {} texts in {:.1f} s; eval accuracy FP32 {:.1%}, Q/DQ {:.1%} (ONNX Runtime)".format(
                result.texts, result.seconds, result.accuracy["fp32"]["accuracy"], result.accuracy["qdq"]["accuracy"]))

    has_trt = importlib.util.find_spec("tensorrt") is not None
    if has_trt:
        from trtbuild.backends.trt.build import build_engines

        results = build_engines(config, int8=os.path.isfile(wd.qdq_onnx), progress=_say).results
        summary["steps"]["build"] = "done: " + ", ".join("{} {:.1f} MiB".format(r.precision, r.engine_bytes / 2**20)
                                                         for r in results)
    else:
        summary["steps"]["build"] = ("skipped: needs TensorRT and a GPU, absent here (on the GPU machine: "
                                     "PYTHONPATH=$PWD trtpy -m trtbuild build --config ... --int8)")
    # verify: the Q/DQ model against the FP32 baseline (calibrate wrote the report when it ran); engines too on a GPU
    from trtbuild.verify import verify

    if os.path.isfile(wd.qdq_onnx) and config.data.eval:
        candidates = ["qdq"] + (["fp16", "int8"] if has_trt else [])
        reports = verify(config, candidates=candidates, progress=_say, show_bar=sys.stderr.isatty()).reports
        for r in reports:
            _say(r.summary())
        summary["verify"] = {r.target: {"passed": bool(r), "macro_f1_drop_pt": r.overall["macro_f1_drop_pt"],
                                        "flip_rate": r.overall["flip_rate"]} for r in reports}
        summary["steps"]["verify"] = "done: " + ", ".join(
            "{} {}".format(r.target, "PASS" if r else "FAIL (gate; see {})".format(r.paths.get("html"))) for r in reports)
    else:
        summary["steps"]["verify"] = "skipped: needs model.qdq.onnx and data.eval"
    if has_trt:
        from trtbuild.bench import benchmark

        report = benchmark(config, progress=_say, show_bar=sys.stderr.isatty())
        _say(report.table())
        summary["steps"]["bench"] = "done: {}".format(report.paths.get("json"))
    else:
        summary["steps"]["bench"] = ("skipped: needs TensorRT and a GPU (on the GPU machine: PYTHONPATH=$PWD trtpy -m "
                                     "trtbuild bench --config ...)")

    _say("")
    _say("artifacts in {}:".format(config.workdir))
    for name in sorted(os.listdir(config.workdir)):
        if name.startswith("."):
            continue
        path = os.path.join(config.workdir, name)
        size = os.path.getsize(path) if os.path.isfile(path) else sum(
            os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
        _say("  {:<16} {:>10.1f} KiB".format(name + ("/" if os.path.isdir(path) else ""), size / 1024))
    _say("")
    _say("steps:")
    for step, state in summary["steps"].items():
        _say("  {:<10} {}".format(step, state))
    summary["seconds"] = round(time.perf_counter() - start, 1)
    _say("demo finished in {:.1f} s".format(summary["seconds"]))
    return summary


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_path", default="configs/zh-sentiment-e5-small.yaml", show_default=True,
              type=click.Path(), help="Model config.")
def main(config_path):
    """`make demo`: every pipeline step on the default model, and what was skipped."""
    run_demo(load_config(config_path))


if __name__ == "__main__":
    main()
