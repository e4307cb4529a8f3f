"""The `trtbuild` command line: a thin click layer over the library.

Each command: load the config -> one library call -> print -> exit code. User errors end as one
line on stderr ("Error: ...") with exit 1; a missing GPU/TensorRT exits 3; a failed accuracy gate 4.
Nothing heavy (torch, transformers, onnxruntime, tensorrt) is imported until a command runs.
"""

import json
import os
import sys

import click

from trtbuild import __version__
from trtbuild.errors import TrtbuildError


class _UserError(click.ClickException):
    """A TrtbuildError as click shows it: `Error: <one line>` on stderr, the error's exit code."""

    def __init__(self, error):
        super().__init__(str(error))
        self.exit_code = error.exit_code


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TrtbuildError as e:
            raise _UserError(e) from None


def _progress(message):
    click.echo(message, err=True)


def _load_config(config_path, name_hint):
    from trtbuild.config import default_config, load_config

    if config_path:
        return load_config(config_path)
    return default_config(name_hint or "model")


def _mib(n):
    return "{:.1f} MiB".format(n / (1 << 20))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="trtbuild")
def cli():
    """Turn a fine-tuned BERT text classifier into fast, still-accurate TensorRT engines.

    Pipeline (one work directory per model, default out/<model>/):
    export -> calibrate -> build -> verify -> bench.
    """


@cli.command("export")
@click.argument("checkpoint", required=False, type=click.Path(file_okay=True, dir_okay=True))
@click.option("-o", "--output", "workdir", type=click.Path(), help="Work directory [default: the config's, or out/<checkpoint name>].")
@click.option("-c", "--config", "config_path", type=click.Path(), help="Model config, e.g. configs/bert-base-zh.yaml.")
@click.option("--force", is_flag=True, help="Overwrite an earlier export in the work directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def export_cmd(checkpoint, workdir, config_path, force, as_json):
    """Export a local Hugging Face checkpoint (sequence classification) to ONNX.

    Writes WORKDIR/model.onnx (opset 17, dynamic batch x sequence), tokenizer/, labels.json and
    export.json, after checking ONNX Runtime against PyTorch on several shapes.
    """
    from trtbuild.config import with_overrides
    from trtbuild.export import export_onnx

    name_hint = os.path.basename(os.path.normpath(checkpoint)) if checkpoint else None
    config = with_overrides(_load_config(config_path, name_hint), checkpoint=checkpoint, workdir=workdir)
    result = export_onnx(config, force=force, progress=_progress)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return
    click.echo("exported {} ({}, opset {}, inputs {}, labels {})".format(
        result.onnx, _mib(result.onnx_bytes), result.opset, ", ".join(result.inputs), ", ".join(result.labels)))
    click.echo("parity vs PyTorch: max |diff| {:.3g} over {} shapes (tolerance {:g})".format(
        result.max_abs_diff, len(result.checks), result.tolerance))
    click.echo("done in {:.1f} s; details in {}".format(result.seconds, os.path.join(result.workdir, "export.json")))


def _workdir_config(workdir, config_path):
    """Config for commands that take WORKDIR: the config's, with WORKDIR overriding its work directory."""
    from trtbuild.config import with_overrides

    if not workdir and not config_path:
        raise click.UsageError("pass WORKDIR or --config")
    name_hint = os.path.basename(os.path.normpath(workdir)) if workdir else None
    return with_overrides(_load_config(config_path, name_hint), workdir=workdir)


@cli.command("calibrate")
@click.argument("workdir", required=False, type=click.Path())
@click.option("--corpus", "corpora", multiple=True, type=click.Path(), help="Calibration text file(s): txt, jsonl, csv, parquet [default: data.calibration].")
@click.option("-c", "--config", "config_path", type=click.Path(), help="Model config, e.g. configs/zh-sentiment-e5-small.yaml.")
@click.option("--method", type=click.Choice(["entropy", "minmax", "percentile"]), help="amax method [default: entropy].")
@click.option("--exclude", multiple=True, help="Node-name pattern (fnmatch) to keep in float; repeatable.")
@click.option("--max-texts", type=click.IntRange(min=1), help="Use a seeded random sample of this many texts.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Texts per ONNX Runtime batch (does not change the result).")
@click.option("--eval", "evals", multiple=True, type=click.Path(), help="Eval file(s) for the coverage comparison and accuracy [default: data.eval].")
@click.option("--lexicon", type=click.Path(), help="Slang lexicon TSV [default: data.lexicon].")
@click.option("--min-slang-coverage", type=click.FloatRange(0, 1), help="Gate: share of the eval set's slang the corpus must cover.")
@click.option("--on-bad-utf8", type=click.Choice(["skip", "fail"]), help="Non-UTF-8 lines: skip them (reported) or fail [default: skip].")
@click.option("--trt-cache", is_flag=True, default=None, help="Also write a TensorRT <= 10 calibration cache.")
@click.option("--no-eval", is_flag=True, help="Skip the FP32 vs Q/DQ accuracy check at the end.")
@click.option("--from-scales", is_flag=True, help="Only rebuild model.qdq.onnx from model.onnx + an existing scales.json (e.g. on the GPU machine).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def calibrate_cmd(workdir, corpora, config_path, method, exclude, max_texts, batch_size, evals, lexicon,
                  min_slang_coverage, on_bad_utf8, trt_cache, no_eval, from_scales, as_json):
    """INT8 entropy calibration over a text corpus -> Q/DQ ONNX, scales and a coverage report.

    Runs the exported FP32 ONNX in ONNX Runtime (CPU) over the corpus, writes WORKDIR/model.qdq.onnx,
    scales.json and coverage.json/.html. Exit 1 when the coverage gate fails.
    """
    import dataclasses

    from trtbuild.calibrate import calibrate, qdq_from_scales

    config = _workdir_config(workdir, config_path)
    if from_scales:
        click.echo(qdq_from_scales(config.workdir, progress=_progress))
        return
    data = config.data
    if evals:
        data = dataclasses.replace(data, eval=tuple(evals))
    if lexicon:
        data = dataclasses.replace(data, lexicon=lexicon)
    ccfg = config.calibrate
    if min_slang_coverage is not None:
        ccfg = dataclasses.replace(ccfg, min_slang_coverage=min_slang_coverage)
    config = config.replace(data=data, calibrate=ccfg)
    result = calibrate(config, corpus_paths=corpora or None, method=method, exclude=exclude or None,
                       max_texts=max_texts, batch_size=batch_size, on_bad_utf8=on_bad_utf8, trt_cache=trt_cache,
                       evaluate=not no_eval, progress=_progress, show_bar=not as_json)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return
    click.echo("calibrated {} texts by {} in {:.1f} s (statistics {:.1f} s); {} truncated".format(
        result.texts, result.method, result.seconds, result.calibration_seconds, result.truncated))
    click.echo("  {:<14} {}".format("Q/DQ ONNX", result.qdq_onnx))
    click.echo("  {:<14} {} ({} activations per tensor, {} weights per channel, {} nodes quantized)".format(
        "scales", result.scales, result.activations, result.weights, result.quantized_nodes))
    if result.coverage_json:
        click.echo("  {:<14} {} (+ .html)".format("coverage", result.coverage_json))
    if result.cache:
        click.echo("  {:<14} {}".format("TRT cache", result.cache))
    if result.accuracy:
        click.echo("accuracy on {} eval texts (ONNX Runtime CPU):".format(result.accuracy["fp32"]["texts"]))
        click.echo("  {:<44} {:>7} {:>7}".format("eval set", "FP32", "Q/DQ"))
        for src in result.accuracy["fp32"]["per_source"]:
            click.echo("  {:<44} {:>6.1%} {:>6.1%}".format(src, result.accuracy["fp32"]["per_source"][src],
                                                           result.accuracy["qdq"]["per_source"][src]))
        click.echo("  {:<44} {:>6.1%} {:>6.1%}".format("all", result.accuracy["fp32"]["accuracy"],
                                                       result.accuracy["qdq"]["accuracy"]))


@cli.command("build")
@click.argument("workdir", required=False, type=click.Path())
@click.option("-c", "--config", "config_path", type=click.Path(), help="Model config.")
@click.option("--int8", is_flag=True, help="Also build the INT8 engine from model.qdq.onnx (run calibrate first).")
@click.option("--fp16/--no-fp16", default=True, help="Build the FP16 engine [default: yes].")
@click.option("--profiles-from", type=click.Path(), help="Derive the length buckets from a corpus's token lengths (needs the tokenizer: CPU side).")
@click.option("--verbose", is_flag=True, help="TensorRT's verbose log.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
def build_cmd(workdir, config_path, int8, fp16, profiles_from, verbose, as_json):
    """Build FP16 (and with --int8 INT8) TensorRT engines for this GPU.

    One optimization profile per length bucket; writes WORKDIR/engines/sm<XY>-trt<version>/ with
    the engines, manifest.json and timing.cache. Needs TensorRT and a GPU (exit 3 otherwise).
    """
    from trtbuild.build import build_engines, profiles_from_lengths

    config = _workdir_config(workdir, config_path)
    profiles = None
    if profiles_from:
        from trtbuild.calibrate import _load_tokenizer
        from trtbuild.export import check_export
        from trtbuild.data import load_corpus, tokenize_into_buckets

        record = check_export(config.workdir)
        corpus = load_corpus([profiles_from], config.data.text_column, config.data.label_column)
        tok = tokenize_into_buckets(_load_tokenizer(config.workdir), corpus.texts, [record["max_length"]])
        edges, profiles = profiles_from_lengths(tok.lengths, record["max_length"], config.build.max_batch)
        _progress("profiles from {} ({} texts): buckets {}".format(profiles_from, len(corpus), edges))
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):  # Polygraphy and TensorRT log with print(): keep stdout clean
        results = build_engines(config, int8=int8, profiles=profiles, progress=_progress, verbose=verbose, fp16=fp16)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
        return
    for r in results:
        click.echo("{:<5} {}  {:.1f} MiB  {:.1f} s ({} timing cache)  layers {}".format(
            r.precision, r.engine, r.engine_bytes / (1 << 20), r.build_seconds, "warm" if r.timing_cache_warm else "cold",
            ", ".join("{} {}".format(k, v) for k, v in sorted(r.layers.items())) or "n/a"))
    click.echo("manifest: {}".format(results[0].manifest))


@cli.command("inspect")
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def inspect_cmd(path, as_json):
    """Inputs, profiles, precision mix and size of an ONNX or an engine."""
    from trtbuild.build import inspect_artifact

    info = inspect_artifact(path)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo("{} ({}, {})".format(info["path"], info["kind"], _mib(info["bytes"])))
    if info["kind"] == "onnx":
        click.echo("  opset {}, {} nodes, {} Q/DQ pairs".format(info["opset"], info["nodes"], info["qdq_pairs"]))
        for i in info["inputs"]:
            click.echo("  input  {} {} {}".format(i["name"], i["dtype"], i["dims"]))
        click.echo("  output {}".format(", ".join(info["outputs"])))
        return
    entry = info.get("manifest") or {}
    if entry:
        click.echo("  built for {} (sm {}), TensorRT {}, {} in {} s".format(
            entry.get("gpu"), entry.get("compute_capability"), entry.get("tensorrt"), entry.get("precision"),
            entry.get("build_seconds")))
    for t in info.get("tensors", []):
        click.echo("  {:<6} {} {} {}".format(t["mode"].lower(), t["name"], t["dtype"], t.get("profiles", t["shape"])))
    if info.get("layers"):
        click.echo("  layers by precision: " + ", ".join("{} {}".format(k, v) for k, v in sorted(info["layers"].items())))
    if info.get("note"):
        click.echo("  " + info["note"])


def main(argv=None):
    """Console-script entry point."""
    cli.main(args=argv, prog_name="trtbuild")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
