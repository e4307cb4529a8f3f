"""The `trtbuild` command line: a thin click layer over the library.

Each command: load the config -> one library call -> print its result -> exit with its exit code. Every
result has `to_dict()` (printed with --json), `summary()` (printed otherwise) and `exit_code`. User
errors end as one line on stderr ("Error: ...") with exit 1; a missing GPU/TensorRT exits 3; a failed
accuracy gate 4; Ctrl-C 130 (`trtbuild._util.Group`). Nothing heavy (torch, transformers, onnxruntime,
tensorrt) is imported until a command runs.
"""

import contextlib
import dataclasses
import os
import sys

import click

from trtbuild import __version__
from trtbuild._util import Group
from trtbuild.config import BACKENDS, CALIBRATE_PRECISIONS, METHODS, default_config, load_config, with_overrides
from trtbuild.errors import ConfigError, TrtbuildError
from trtbuild.workdir import dumps_json


def _progress(message):
    click.echo(message, err=True)


def _emit(result, as_json):
    """Print a result (JSON or its summary) and exit with its exit code."""
    if as_json:
        click.echo(dumps_json(result.to_dict()))
    else:
        click.echo(result.summary())
    if result.exit_code:
        sys.exit(result.exit_code)


def _load_config(config_path, name_hint):
    if config_path:
        return load_config(config_path)
    return default_config(name_hint or "model")


def _workdir_config(workdir, config_path):
    """Config for commands that take WORKDIR: the config's, with WORKDIR overriding its work directory."""
    if not workdir and not config_path:
        raise click.UsageError("pass WORKDIR or --config")
    name_hint = os.path.basename(os.path.normpath(workdir)) if workdir else None
    return with_overrides(_load_config(config_path, name_hint), workdir=workdir)


def _replace(config, section, **changes):
    """The config with some fields of one section (e.g. "bench" or "bench.simulate") replaced; None values are left
    out (not given). An option out of bounds is refused with its key path, as the config would be."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        return config
    head, _, rest = section.partition(".")
    part = getattr(config, head)
    try:
        if rest:
            inner = _replace(part, rest, **changes)
            return config.replace(**{head: inner}) if hasattr(config, "replace") else dataclasses.replace(
                config, **{head: inner})
        new = dataclasses.replace(part, **changes)
    except ConfigError as e:
        raise e.under(head) from None
    return config.replace(**{head: new}) if hasattr(config, "replace") else dataclasses.replace(config, **{head: new})


# ---------------------------------------------------------------------------------------------
# Options every command shares

def workdir_argument(f):
    return click.argument("workdir", required=False, type=click.Path())(f)


def config_option(f):
    return click.option("-c", "--config", "config_path", type=click.Path(),
                        help="Model config, e.g. configs/zh-sentiment-e5-small.yaml.")(f)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(f)


def reports_option(f):
    return click.option("--reports", "report_dir", type=click.Path(),
                        help="Where the reports go [default: WORKDIR/reports].")(f)


@contextlib.contextmanager
def _stdout_to_stderr():
    """Polygraphy and TensorRT log with print(): keep stdout for the result."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="trtbuild")
def cli():
    """Turn a fine-tuned BERT text classifier into fast, still-accurate TensorRT engines.

    Pipeline (one work directory per model, default out/<model>/):
    export -> calibrate -> build -> verify -> bench.
    """


@cli.command("export")
@click.argument("checkpoint", required=False, type=click.Path(file_okay=True, dir_okay=True))
@click.option("-o", "--output", "workdir", type=click.Path(), help="Work directory [default: the config's, or out/<checkpoint name>].")
@config_option
@click.option("--force", is_flag=True, help="Overwrite an earlier export in the work directory.")
@json_option
def export_cmd(checkpoint, workdir, config_path, force, as_json):
    """Export a local Hugging Face checkpoint (sequence classification) to ONNX.

    Writes WORKDIR/model.onnx (opset 17, dynamic batch x sequence), tokenizer/, labels.json and
    export.json, after checking ONNX Runtime against PyTorch on several shapes.
    """
    from trtbuild.export import export_onnx

    name_hint = os.path.basename(os.path.normpath(checkpoint)) if checkpoint else None
    config = with_overrides(_load_config(config_path, name_hint), checkpoint=checkpoint, workdir=workdir)
    _emit(export_onnx(config, force=force, progress=_progress), as_json)


@cli.command("calibrate")
@workdir_argument
@click.option("--corpus", "corpora", multiple=True, type=click.Path(), help="Calibration text file(s): txt, jsonl, csv, parquet [default: data.calibration].")
@config_option
@click.option("--method", type=click.Choice(METHODS), help="amax method [default: entropy].")
@click.option("--exclude", multiple=True, help="Node-name pattern (fnmatch) to keep in float; repeatable.")
@click.option("--max-texts", type=click.IntRange(min=1), help="Use a seeded random sample of this many texts.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Texts per ONNX Runtime batch (does not change the result).")
@click.option("--eval", "evals", multiple=True, type=click.Path(), help="Eval file(s) for the coverage comparison and accuracy [default: data.eval].")
@click.option("--lexicon", type=click.Path(), help="Slang lexicon TSV [default: data.lexicon].")
@click.option("--min-slang-coverage", type=click.FloatRange(0, 1), help="Gate: share of the eval set's slang the corpus must cover.")
@click.option("--on-bad-utf8", type=click.Choice(["skip", "fail"]), help="Non-UTF-8 lines: skip them (reported) or fail [default: skip].")
@click.option("--trt-cache", is_flag=True, default=None, help="Also write a TensorRT <= 10 calibration cache.")
@click.option("--no-eval", is_flag=True, help="Skip the FP32 vs Q/DQ accuracy check at the end.")
@click.option("--auto-fallback/--no-fallback", default=None,
              help="When the held-out calibration texts flip more than calibrate.fallback_target, keep the most "
                   "sensitive GEMM inputs in float, one at a time [default: on].")
@click.option("--equalize/--no-equalize", default=None,
              help="SmoothQuant equalization of the GEMM inputs, exact in FP32 [default: on].")
@click.option("--smooth-alpha", type=click.FloatRange(0, 1), help="One equalization alpha for every GEMM input [default: searched per tensor].")
@click.option("--from-scales", is_flag=True, help="Only rebuild model.qdq.onnx from model.onnx + an existing scales.json (e.g. on the GPU machine).")
@click.option("--precision", type=click.Choice(CALIBRATE_PRECISIONS),
              help="fp8: also write model.fp8.onnx, the same scales as FP8 E4M3 Q/DQ (opset 19; TensorRT >= 10 on "
                   "SM >= 8.9; `verify --candidate fp8` measures it in ONNX Runtime) [default: calibrate.precision, int8].")
@json_option
def calibrate_cmd(workdir, corpora, config_path, method, exclude, max_texts, batch_size, evals, lexicon,
                  min_slang_coverage, on_bad_utf8, trt_cache, no_eval, auto_fallback, equalize, smooth_alpha, from_scales,
                  precision, as_json):
    """INT8 calibration over a text corpus -> Q/DQ ONNX, scales and a coverage report.

    Runs the exported FP32 ONNX in ONNX Runtime (CPU) over the corpus (20 % held out to judge the choices),
    equalizes the GEMM inputs, writes WORKDIR/model.qdq.onnx, scales.json and coverage.json/.html, then
    checks the Q/DQ model against the verify gate on the eval set. Exit 1 when the coverage gate fails,
    4 when the accuracy gate fails.
    """
    config = _workdir_config(workdir, config_path)
    if smooth_alpha is not None and equalize is False:
        raise TrtbuildError("--smooth-alpha sets the equalization alpha; it cannot go with --no-equalize")
    if from_scales:
        from trtbuild.calibrate.qdq import qdq_from_scales

        given = [f for f, v in (("--equalize/--no-equalize", equalize), ("--smooth-alpha", smooth_alpha),
                                ("--auto-fallback/--no-fallback", auto_fallback)) if v is not None]
        if given:
            raise TrtbuildError("--from-scales rebuilds exactly what scales.json records; {} cannot change it (drop "
                                "it, or calibrate again)".format(", ".join(given)))

        fp8 = (precision or config.calibrate.precision) == "fp8"
        _emit(qdq_from_scales(config.workdir, progress=_progress, fp8=fp8), as_json)
        return
    from trtbuild.calibrate.fallback import calibrate_and_check

    # --corpus becomes data.calibration, so the verify gate's text:slang-unseen slice compares with the same corpus
    config = _replace(config, "data", eval=tuple(evals) or None, lexicon=lexicon, calibration=tuple(corpora) or None)
    config = _replace(config, "calibrate", min_slang_coverage=min_slang_coverage, max_texts=max_texts,
                      batch_size=batch_size, equalize=equalize, smooth_alpha=smooth_alpha, precision=precision)
    _emit(calibrate_and_check(config, method=method, exclude=exclude or None,
                              on_bad_utf8=on_bad_utf8, trt_cache=trt_cache, evaluate_qdq=not no_eval,
                              auto_fallback=auto_fallback, progress=_progress, show_bar=not as_json), as_json)


@cli.command("build")
@workdir_argument
@config_option
@click.option("--int8", is_flag=True, help="Also build the INT8 engine from model.qdq.onnx (run calibrate first).")
@click.option("--fp16/--no-fp16", default=True, help="Build the FP16 engine [default: yes].")
@click.option("--fp8", is_flag=True, help="Also build an FP8 engine from model.fp8.onnx (calibrate --precision fp8; TensorRT >= 10 on SM >= 8.9).")
@click.option("--profiles-from", type=click.Path(), help="Derive the length buckets from a corpus's token lengths (needs the tokenizer: CPU side).")
@click.option("--verbose", is_flag=True, help="TensorRT's verbose log.")
@json_option
def build_cmd(workdir, config_path, int8, fp16, fp8, profiles_from, verbose, as_json):
    """Build FP16 (and with --int8 INT8) TensorRT engines for this GPU.

    One optimization profile per length bucket; writes WORKDIR/engines/sm<XY>-trt<version>/ with
    the engines, manifest.json and timing.cache. Needs TensorRT and a GPU (exit 3 otherwise).
    """
    from trtbuild.backends.trt.build import build_engines

    config = _workdir_config(workdir, config_path)
    with _stdout_to_stderr():
        report = build_engines(config, int8=int8, fp16=fp16, profiles_from=profiles_from, progress=_progress,
                               verbose=verbose, fp8=fp8)
    _emit(report, as_json)


@cli.command("verify")
@workdir_argument
@config_option
@click.option("--candidate", "candidates", multiple=True,
              help="What to check: an .onnx or .engine path, or qdq, fp8, int8, fp16, fp32, fp16-onnx [default: qdq]; repeatable.")
@click.option("--eval", "evals", multiple=True, type=click.Path(), help="Labelled eval file(s): jsonl, csv, parquet [default: data.eval].")
@reports_option
@click.option("--max-f1-drop", type=click.FloatRange(min=0), help="Gate: overall macro-F1 drop, points [default: 0.8].")
@click.option("--max-flip-rate", type=click.FloatRange(0, 1), help="Gate: share of texts whose prediction changes [default: 0.01].")
@click.option("--max-slice-f1-drop", type=click.FloatRange(min=0), help="Gate: macro-F1 drop of any slice, points [default: 2].")
@json_option
def verify_cmd(workdir, config_path, candidates, evals, report_dir, max_f1_drop, max_flip_rate, max_slice_f1_drop, as_json):
    """Accuracy drift of a candidate against the ONNX Runtime FP32 baseline: a CI gate.

    Overall and per slice (eval set, slang vs plain, length bucket, label): accuracy and macro-F1 drop
    with bootstrap 95% intervals, flip rate, logit difference, KL. Writes JSON, JUnit XML and HTML
    reports. Exit 0 when every gate passes, 4 when one fails, 1 on bad input.
    """
    from trtbuild.verify import verify

    config = _replace(_workdir_config(workdir, config_path), "verify", max_f1_drop=max_f1_drop,
                      max_flip_rate=max_flip_rate, max_slice_f1_drop=max_slice_f1_drop)
    with _stdout_to_stderr():
        result = verify(config, candidates=candidates or None, eval_paths=evals or None, report_dir=report_dir,
                        progress=_progress, show_bar=not as_json)
    _emit(result, as_json)


def _shape(text):
    try:
        batch, seq = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter("{!r}: write a shape as BATCHxSEQ, e.g. 64x128".format(text)) from None
    if batch < 1 or seq < 1:
        raise click.BadParameter("{!r}: batch and sequence must be >= 1".format(text))
    return batch, seq


@cli.command("bench")
@workdir_argument
@config_option
@click.option("--backend", "backends", multiple=True, type=click.Choice(BACKENDS),
              help="Backend to measure; repeatable [default: bench.backends, all of them].")
@click.option("--shape", "shapes", multiple=True, help="BATCHxSEQ to measure, e.g. 64x128; repeatable [default: bench.shapes].")
@click.option("--iterations", type=click.IntRange(min=1), help="Timed iterations per repeat [default: 100].")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Texts/s of the detailed batching simulation [default: 8000].")
@click.option("--no-simulate", is_flag=True, help="Skip the dynamic-batching simulation.")
@click.option("--cuda-graph/--no-cuda-graph", default=None,
              help="Replay each engine shape as a CUDA graph [default: bench.cuda_graph, on].")
@click.option("--torch-python", type=click.Path(), help="Interpreter with torch + CUDA for the torch backends.")
@click.option("--engine", "extra_engines", multiple=True, type=click.Path(),
              help="Also time this engine of another work directory (WORKDIR/engines/<target>/int8.engine), in the "
                   "same run, as trt-<precision>@<its work directory>; repeatable.")
@reports_option
@json_option
def bench_cmd(workdir, config_path, backends, shapes, iterations, rate, no_simulate, cuda_graph, torch_python,
              extra_engines, report_dir, as_json):
    """Throughput and latency of the engines beside torch and ONNX Runtime, on the same GPU, in one run.

    Per (batch, sequence) shape and backend: median time and p50/p95/p99, with inputs on the GPU
    (device) and with host copies (e2e); plus the seed's dynamic batching (length buckets, 20 ms
    timeout, min batch 8) simulated on measured times. Writes reports/bench-<gpu>.json and a PNG.
    """
    from trtbuild.bench import benchmark

    config = _replace(_workdir_config(workdir, config_path), "bench.simulate", rate=rate)
    config = _replace(config, "bench", iterations=iterations, torch_python=torch_python, cuda_graph=cuda_graph)
    parsed = [_shape(s) for s in shapes]
    with _stdout_to_stderr():
        report = benchmark(config, backends=backends or None, shapes=parsed or None, simulate_traffic=not no_simulate,
                           report_dir=report_dir, progress=_progress, show_bar=not as_json,
                           extra_engines=extra_engines)
    _emit(report, as_json)


@cli.command("inspect")
@click.argument("path", type=click.Path())
@json_option
def inspect_cmd(path, as_json):
    """Inputs, profiles, precision mix and size of an ONNX or an engine."""
    from trtbuild.backends import inspect_artifact

    _emit(inspect_artifact(path), as_json)


def main(argv=None):
    """Console-script entry point."""
    cli.main(args=argv, prog_name="trtbuild")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
