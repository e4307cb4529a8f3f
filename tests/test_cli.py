"""The command line through click's CliRunner: exit codes and the exact one-line messages."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from helpers import listing

from trtbuild.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)


@pytest.fixture
def fake_checkpoint(tmp_path):
    """A checkpoint directory with config.json and a vocab, whose weights each test arranges."""
    path = tmp_path / "ckpt"
    path.mkdir()
    write_json(path / "config.json", {"architectures": ["BertForSequenceClassification"], "model_type": "bert"})
    (path / "vocab.txt").write_text("[PAD]\n[UNK]\n", encoding="utf-8")
    return path


def test_export_prints_summary_and_progress(tiny_checkpoint, workdir):
    result = invoke("export", tiny_checkpoint, "-o", workdir)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("exported {} (".format(os.path.join(workdir, "model.onnx")))
    assert "inputs input_ids, attention_mask, token_type_ids" in lines[0]
    assert lines[1].startswith("parity vs PyTorch: max |diff| ")
    assert "over 4 shapes (tolerance 0.0001)" in lines[1]
    stages = [l for l in result.stderr.splitlines() if l.startswith("[")]
    assert [s[:5] for s in stages] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]


def test_export_json_output(tiny_checkpoint, workdir):
    result = invoke("export", tiny_checkpoint, "-o", workdir, "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert data["max_abs_diff"] < 1e-4 and len(data["checks"]) == 4


def test_export_from_config(tiny_checkpoint, tmp_path, write_config):
    work = tmp_path / "from-config"
    path = write_config("model:\n  name: tiny\n  checkpoint: {}\n  workdir: {}\nexport:\n  max_length: 32\n"
                        "data:\n  buckets: [16, 32]\n".format(tiny_checkpoint, work))
    result = invoke("export", "--config", path)
    assert result.exit_code == 0, result.output
    assert json.load(open(work / "export.json"))["max_length"] == 32


def test_existing_output_needs_force(tiny_checkpoint, workdir):
    assert invoke("export", tiny_checkpoint, "-o", workdir).exit_code == 0
    result = invoke("export", tiny_checkpoint, "-o", workdir)
    assert result.exit_code == 1
    assert result.stderr == ("Error: {} already holds an export (model.onnx, tokenizer, labels.json, export.json); "
                             "pass --force to overwrite it, or choose another -o WORKDIR\n".format(workdir))
    assert invoke("export", tiny_checkpoint, "-o", workdir, "--force").exit_code == 0


def test_missing_directory(tmp_path, workdir):
    result = invoke("export", tmp_path / "nope", "-o", workdir)
    assert result.exit_code == 1
    assert result.stderr == ("Error: checkpoint {} is not a directory; pass a local Hugging Face checkpoint "
                             "directory (config.json + model.safetensors + tokenizer files)\n".format(tmp_path / "nope"))


def test_missing_config_json(fake_checkpoint, workdir):
    os.remove(fake_checkpoint / "config.json")
    result = invoke("export", fake_checkpoint, "-o", workdir)
    assert result.exit_code == 1
    assert result.stderr == ("Error: checkpoint {} has no config.json; save it with model.save_pretrained(dir) so the "
                             "directory holds config.json and model.safetensors\n".format(fake_checkpoint))


def test_pickle_only_checkpoint(fake_checkpoint, workdir):
    (fake_checkpoint / "pytorch_model.bin").write_bytes(b"\x80\x02not really a pickle")
    result = invoke("export", fake_checkpoint, "-o", workdir)
    assert result.exit_code == 1
    assert result.stderr == ("Error: checkpoint {} has only pickle weights (pytorch_model.bin); trtbuild loads "
                             "safetensors only: convert it with model.save_pretrained(dir, safe_serialization=True)\n"
                             .format(fake_checkpoint))
    assert not os.path.exists(workdir)


def test_no_weights_at_all(fake_checkpoint, workdir):
    result = invoke("export", fake_checkpoint, "-o", workdir)
    assert result.exit_code == 1
    assert result.stderr == ("Error: checkpoint {} has no model.safetensors; save the weights with "
                             "model.save_pretrained(dir)\n".format(fake_checkpoint))


def test_non_classification_model(fake_checkpoint, workdir):
    write_json(fake_checkpoint / "config.json", {"architectures": ["BertModel"], "model_type": "bert"})
    result = invoke("export", fake_checkpoint, "-o", workdir)
    assert result.exit_code == 1
    assert result.stderr == ("Error: checkpoint {} is not a sequence-classification model (BertModel in config.json); "
                             "export a *ForSequenceClassification checkpoint (a fine-tuned classifier with its "
                             "head)\n".format(fake_checkpoint))


def test_remote_code_refused(fake_checkpoint, workdir):
    write_json(fake_checkpoint / "config.json", {"architectures": ["MyForSequenceClassification"],
                                                  "auto_map": {"AutoModel": "modeling_my.MyModel"}})
    result = invoke("export", fake_checkpoint, "-o", workdir)
    assert result.exit_code == 1
    assert result.stderr == ("Error: checkpoint {} needs custom model code (auto_map in config.json); trtbuild never "
                             "runs remote code: convert it to a standard transformers architecture\n"
                             .format(fake_checkpoint))


def test_missing_tokenizer(tiny_checkpoint, tmp_path, workdir):
    import shutil

    ckpt = tmp_path / "no-tok"
    shutil.copytree(tiny_checkpoint, ckpt)
    for name in os.listdir(ckpt):
        if name.startswith("tokenizer"):
            os.remove(ckpt / name)
    result = invoke("export", ckpt, "-o", workdir)
    assert result.exit_code == 1
    assert result.stderr == ("Error: checkpoint {} has no tokenizer files (tokenizer.json or vocab.txt); save the "
                             "tokenizer beside the model with tokenizer.save_pretrained(dir)\n".format(ckpt))


def test_no_checkpoint_given(workdir):
    result = invoke("export", "-o", workdir)
    assert result.exit_code == 1
    assert result.stderr == "Error: no checkpoint given; pass CHECKPOINT or set model.checkpoint in the config\n"


def test_bad_config_is_one_line(tiny_checkpoint, write_config, workdir):
    path = write_config("model:\n  name: m\nbuild:\n  profiles:\n    - {min: [1, 1], opt: [8, 64], max: [64, 32]}\n")
    result = invoke("export", tiny_checkpoint, "-o", workdir, "--config", path)
    assert result.exit_code == 1
    assert result.stderr == "Error: build.profiles[0].max: must be >= opt (got [64, 32] < [8, 64]) (in {})\n".format(path)


def test_parity_failure_exits_1_with_numbers(tiny_checkpoint, write_config, workdir):
    path = write_config("model:\n  name: m\nexport:\n  tolerance: 1.0e-30\n")
    result = invoke("export", tiny_checkpoint, "-o", workdir, "--config", path)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith("Error: ONNX Runtime differs from PyTorch beyond tolerance 1e-30: "
                                                     "batch 1 x seq 8: max |diff| ")
    assert "nothing was written" in result.stderr
    assert listing(workdir) == []


def test_help_lists_only_working_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    commands = [line.split()[0] for line in result.stdout.split("Commands:")[1].strip().splitlines()]
    assert commands == ["bench", "build", "calibrate", "export", "inspect", "verify"]


def test_help_imports_nothing_heavy():
    code = ("import sys\nfrom trtbuild.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'tensorrt', 'transformers', 'onnxruntime', 'onnx', 'datasets') "
            "if m in sys.modules]\nprint('HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "HEAVY []"


def test_python_m_trtbuild_runs():
    out = subprocess.run([sys.executable, "-m", "trtbuild", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("trtbuild, version ")
