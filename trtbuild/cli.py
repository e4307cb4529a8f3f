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
@click.option("--auto-fallback", is_flag=True, default=None,
              help="If the verify gate fails, keep the most sensitive layers in float, one at a time, until it passes.")
@click.option("--from-scales", is_flag=True, help="Only rebuild model.qdq.onnx from model.onnx + an existing scales.json (e.g. on the GPU machine).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def calibrate_cmd(workdir, corpora, config_path, method, exclude, max_texts, batch_size, evals, lexicon,
                  min_slang_coverage, on_bad_utf8, trt_cache, no_eval, auto_fallback, from_scales, as_json):
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
                       evaluate=not no_eval, auto_fallback=auto_fallback, progress=_progress, show_bar=not as_json)
    failed_fallback = result.fallback is not None and not result.fallback["passed"]
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        if failed_fallback:
            sys.exit(4)
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
    if result.verify:
        gate = "passed" if result.verify["passed"] else "FAILED ({})".format("; ".join(
            g["name"] for g in result.verify["gates"] if not g["passed"]))
        click.echo("verify gate {}: {}".format(gate, result.verify["paths"].get("html", "")))
    if result.fallback:
        fb = result.fallback
        click.echo("fallback: {} node(s) kept in float{}: {}".format(
            len(fb["unquantized"]), "" if fb["passed"] else " and the gate still fails (budget {})".format(fb["budget"]),
            ", ".join(fb["unquantized"])))
    if failed_fallback:
        sys.exit(4)


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
        edges, profiles = profiles_from_lengths(tok.lengths, record["max_length"], config.build.max_batch,
                                                 fixed_sequence=config.build.fixed_sequence)
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


@cli.command("verify")
@click.argument("workdir", required=False, type=click.Path())
@click.option("-c", "--config", "config_path", type=click.Path(), help="Model config (names the eval sets and the gate).")
@click.option("--candidate", "candidates", multiple=True,
              help="What to check: an .onnx or .engine path, or qdq, int8, fp16, fp32 [default: qdq]; repeatable.")
@click.option("--eval", "evals", multiple=True, type=click.Path(), help="Labelled eval file(s): jsonl, csv, parquet [default: data.eval].")
@click.option("--reports", "report_dir", type=click.Path(), help="Where verify-<target>.{json,xml,html} go [default: WORKDIR/reports].")
@click.option("--max-f1-drop", type=click.FloatRange(min=0), help="Gate: overall macro-F1 drop, points [default: 0.8].")
@click.option("--max-flip-rate", type=click.FloatRange(0, 1), help="Gate: share of texts whose prediction changes [default: 0.01].")
@click.option("--max-slice-f1-drop", type=click.FloatRange(min=0), help="Gate: macro-F1 drop of any slice, points [default: 2].")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON on stdout.")
def verify_cmd(workdir, config_path, candidates, evals, report_dir, max_f1_drop, max_flip_rate, max_slice_f1_drop, as_json):
    """Accuracy drift of a candidate against the ONNX Runtime FP32 baseline: a CI gate.

    Overall and per slice (eval set, slang vs plain, length bucket, label): accuracy and macro-F1 drop
    with bootstrap 95% intervals, flip rate, logit difference, KL. Writes JSON, JUnit XML and HTML
    reports. Exit 0 when every gate passes, 4 when one fails, 1 on bad input.
    """
    import contextlib
    import dataclasses

    from trtbuild.verify import verify

    config = _workdir_config(workdir, config_path)
    changes = {k: v for k, v in (("max_f1_drop", max_f1_drop), ("max_flip_rate", max_flip_rate),
                                 ("max_slice_f1_drop", max_slice_f1_drop)) if v is not None}
    if changes:
        config = config.replace(verify=dataclasses.replace(config.verify, **changes))
    with contextlib.redirect_stdout(sys.stderr):  # TensorRT / Polygraphy log with print()
        reports = verify(config, candidates=candidates or None, eval_paths=evals or None, report_dir=report_dir,
                         progress=_progress, show_bar=not as_json)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in reports], indent=2, ensure_ascii=False))
    else:
        for r in reports:
            click.echo(r.summary())
            click.echo("  {:<26} {:>5} {:>8} {:>8} {:>8}  {:<17} {:>6}".format(
                "slice", "texts", "F1 base", "F1 cand", "drop", "95% CI", "flips"))
            for name, m in r.slices.items():
                ci = m["macro_f1_drop_ci95"]
                click.echo("  {:<26} {:>5} {:>7.2%} {:>7.2%} {:>+7.2f}  {:<17} {:>6.1%}".format(
                    name, m["texts"], m["baseline"]["macro_f1"], m["candidate"]["macro_f1"], m["macro_f1_drop_pt"],
                    "[{:+.2f}, {:+.2f}]".format(*ci) if ci else "", m["flip_rate"]))
            for g in r.failed_gates():
                click.echo("  FAILED: " + g.describe())
            click.echo("  reports: {}".format(", ".join(r.paths[k] for k in ("json", "junit", "html"))))
    code = max(r.exit_code for r in reports)
    if code:
        sys.exit(code)


def _shape(text):
    try:
        batch, seq = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter("{!r}: write a shape as BATCHxSEQ, e.g. 64x128".format(text)) from None
    if batch < 1 or seq < 1:
        raise click.BadParameter("{!r}: batch and sequence must be >= 1".format(text))
    return batch, seq


@cli.command("bench")
@click.argument("workdir", required=False, type=click.Path())
@click.option("-c", "--config", "config_path", type=click.Path(), help="Model config (buckets, bench settings).")
@click.option("--backend", "backends", multiple=True,
              type=click.Choice(["trt-fp16", "trt-int8", "torch-fp32", "torch-fp16", "torch-compile-fp16", "ort-cpu"]),
              help="Backend to measure; repeatable [default: bench.backends, all of them].")
@click.option("--shape", "shapes", multiple=True, help="BATCHxSEQ to measure, e.g. 64x128; repeatable [default: bench.shapes].")
@click.option("--iterations", type=click.IntRange(min=1), help="Timed iterations per repeat [default: 100].")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Texts/s of the detailed batching simulation [default: 8000].")
@click.option("--no-simulate", is_flag=True, help="Skip the dynamic-batching simulation.")
@click.option("--cuda-graph/--no-cuda-graph", default=None,
              help="Replay each engine shape as a CUDA graph [default: bench.cuda_graph, on].")
@click.option("--torch-python", type=click.Path(), help="Interpreter with torch + CUDA for the torch backends.")
@click.option("--reports", "report_dir", type=click.Path(), help="Where bench-<gpu>.{json,png} go [default: WORKDIR/reports].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def bench_cmd(workdir, config_path, backends, shapes, iterations, rate, no_simulate, cuda_graph, torch_python, report_dir,
              as_json):
    """Throughput and latency of the engines beside torch and ONNX Runtime, on the same GPU, in one run.

    Per (batch, sequence) shape and backend: median time and p50/p95/p99, with inputs on the GPU
    (device) and with host copies (e2e); plus the seed's dynamic batching (length buckets, 20 ms
    timeout, min batch 8) simulated on measured times. Writes reports/bench-<gpu>.json and a PNG.
    """
    import contextlib
    import dataclasses

    from trtbuild.bench import benchmark

    config = _workdir_config(workdir, config_path)
    bcfg = config.bench
    changes = {}
    if iterations:
        changes["iterations"] = iterations
    if torch_python:
        changes["torch_python"] = torch_python
    if cuda_graph is not None:
        changes["cuda_graph"] = cuda_graph
    if rate:
        changes["simulate"] = dataclasses.replace(bcfg.simulate, rate=rate)
    if changes:
        config = config.replace(bench=dataclasses.replace(bcfg, **changes))
    parsed = [_shape(s) for s in shapes]
    with contextlib.redirect_stdout(sys.stderr):  # TensorRT / Polygraphy log with print()
        report = benchmark(config, backends=backends or None, shapes=parsed or None,
                           simulate_traffic=not no_simulate, report_dir=report_dir, progress=_progress,
                           show_bar=not as_json)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo("bench {} on {} ({:.0f} s)".format(report.config_name, report.device.get("gpu") or "CPU", report.seconds))
    click.echo(report.table())
    click.echo("reports: {}".format(", ".join(report.paths.values())))


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
