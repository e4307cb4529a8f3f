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


def main(argv=None):
    """Console-script entry point."""
    cli.main(args=argv, prog_name="trtbuild")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
