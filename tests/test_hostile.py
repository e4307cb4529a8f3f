"""Hostile inputs, table-driven: every bad input to every command ends in its exit code and ONE line on stderr
starting "Error: " that says what to do (never a traceback, never exit 0), and a failed run leaves every file
that was there before byte-identical and no hidden temp file or staging directory behind.

Exit codes (README): 1 bad input, 2 usage (click's), 3 no GPU / TensorRT, 4 an accuracy gate failed.

Each case copies a prepared work directory (exported, calibrated, or calibrated + verified once) or the tiny
checkpoint into its own tmp_path, damages it, runs the CLI in-process with click's CliRunner and checks the
contract; the table is CASES below."""

import hashlib
import json
import os
import random
import shutil
import traceback
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import pytest
from click.testing import CliRunner
from helpers import leftovers, tree_digest

from trtbuild.cli import cli

TINY_CONFIG = """model: {name: tiny}
export: {max_length: 32}
data: {buckets: [16, 32]}
verify: {bootstrap: 50}
bench: {shapes: [[1, 16]], warmup: 1, iterations: 2, repeats: 1, ort_iterations: 1}
"""

WORDS = "the quick brown fox 我 不 好 的 了 是 abc def ghij klm 123 45".split()


def _texts(n, seed=0, longest=20):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, longest))) for _ in range(n)]


def invoke(argv):
    return CliRunner().invoke(cli, [str(a) for a in argv])


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)  # allow_nan: NaN / Infinity literals, as a hand-edited file may hold


# ---------------------------------------------------------------------------------------------
# Prepared directories, once per module

@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_checkpoint):
    """The shared inputs: a tiny config, a calibration corpus, a labelled eval set, and three work directories:
    exported (E), calibrated (C: E + calibrate --no-eval) and verified (V: C + verify --candidate fp32, which
    caches the eval set and writes reports/)."""
    root = tmp_path_factory.mktemp("hostile")
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY_CONFIG, encoding="utf-8")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(_texts(120)) + "\n", encoding="utf-8")
    evalset = root / "eval.jsonl"
    with open(evalset, "w", encoding="utf-8") as f:
        for i, text in enumerate(_texts(40, seed=1)):
            f.write(json.dumps({"text": text, "label": ("negative", "positive")[i % 2]}, ensure_ascii=False) + "\n")
    exported = str(root / "exported")
    r = invoke(["export", tiny_checkpoint, "-o", exported, "-c", cfg])
    assert r.exit_code == 0, r.output
    calibrated = str(root / "calibrated")
    shutil.copytree(exported, calibrated)
    r = invoke(["calibrate", calibrated, "-c", cfg, "--corpus", corpus, "--no-eval"])
    assert r.exit_code == 0, r.output
    verified = str(root / "verified")
    shutil.copytree(calibrated, verified)
    r = invoke(["verify", verified, "-c", cfg, "--eval", evalset, "--candidate", "fp32"])
    assert r.exit_code == 0, r.output
    assert os.listdir(os.path.join(verified, "cache"))
    return {"cfg": str(cfg), "corpus": str(corpus), "eval": str(evalset), "ckpt": tiny_checkpoint,
            "exported": exported, "calibrated": calibrated, "verified": verified}


class Env:
    """One case's tmp_path and the names its argv template uses: {T} (tmp), {W} (the work directory copy),
    {CK} (the checkpoint copy), {cfg}, {corpus}, {eval}, {ckpt} (the shared, undamaged inputs)."""

    def __init__(self, tmp, base):
        self.tmp = str(tmp)
        self.base = base
        self.W = os.path.join(self.tmp, "W")
        self.CK = os.path.join(self.tmp, "CK")
        self.vars = dict(base, T=self.tmp, W=self.W, CK=self.CK)

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)


# ---------------------------------------------------------------------------------------------
# Setup pieces (each takes the Env; `chain` runs several)

def chain(*steps):
    def run(env):
        for step in steps:
            step(env)
    return run


def nothing(env):
    pass


def work(kind="exported"):
    def run(env):
        shutil.copytree(env.base[kind], env.W)
    return run


def ckpt(env):
    shutil.copytree(env.base["ckpt"], env.CK)


def in_ckpt(edit):
    """Copy the checkpoint, then edit its config.json: edit(dict) returns the new JSON value (or bytes)."""
    def run(env):
        ckpt(env)
        path = os.path.join(env.CK, "config.json")
        new = edit(read_json(path))
        if isinstance(new, bytes):
            with open(path, "wb") as f:
                f.write(new)
        else:
            write_json(path, new)
    return run


def ckpt_set(**changes):
    def edit(cfg):
        cfg.update(changes)
        return cfg
    return in_ckpt(edit)


def ckpt_drop(*keys):
    def edit(cfg):
        for k in keys:
            cfg.pop(k, None)
        return cfg
    return in_ckpt(edit)


def ckpt_remove(*names):
    def run(env):
        if not os.path.isdir(env.CK):
            ckpt(env)
        for name in names:
            os.remove(os.path.join(env.CK, name))
    return run


def ckpt_write(name, data):
    def run(env):
        if not os.path.isdir(env.CK):
            ckpt(env)
        with open(os.path.join(env.CK, name), "wb") as f:
            f.write(data)
    return run


def ckpt_without_classifier(env):
    from safetensors.torch import load_file, save_file

    ckpt(env)
    path = os.path.join(env.CK, "model.safetensors")
    tensors = load_file(path)
    kept = {k: v.contiguous() for k, v in tensors.items() if not k.startswith("classifier.")}
    assert len(kept) < len(tensors)
    save_file(kept, path, metadata={"format": "pt"})


def write(name, data):
    """A file in the case's tmp_path (str: UTF-8 text; bytes as they are)."""
    def run(env):
        path = env.path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return run


def jsonl(name, rows):
    return write(name, "".join(json.dumps(r) + "\n" for r in rows))


def config(name, text):
    return write(name, text)


def in_work(relpath, edit):
    """Edit a JSON file of the work directory: edit(value) returns the new value."""
    def run(env):
        path = os.path.join(env.W, relpath)
        write_json(path, edit(read_json(path)))
    return run


def truncate(relpath, keep=0.5):
    def run(env):
        path = os.path.join(env.W, relpath)
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[:int(len(data) * keep)])
    return run


def append(relpath, data=b"\0"):
    def run(env):
        with open(os.path.join(env.W, relpath), "ab") as f:
            f.write(data)
    return run


def remove(relpath):
    def run(env):
        path = os.path.join(env.W, relpath)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    return run


def patch_export_sha(env):
    """export.json made to vouch for model.onnx as it is now (a re-export, or a forged record)."""
    path = os.path.join(env.W, "export.json")
    record = read_json(path)
    record["sha256"]["onnx"] = sha256(os.path.join(env.W, "model.onnx"))
    write_json(path, record)


def reexport_in_place(env):
    """model.onnx replaced by an equivalent, different file and export.json updated: as if the export was done
    again, while the old calibration (model.qdq.onnx, calibrate.json) stayed."""
    import onnx

    path = os.path.join(env.W, "model.onnx")
    model = onnx.load(path)
    model.doc_string = "exported again"
    onnx.save(model, path)
    patch_export_sha(env)


def set_amax(value):
    def edit(scales):
        name = sorted(scales["activations"])[0]
        scales["activations"][name]["amax"] = value
        return scales
    return in_work("scales.json", edit)


def drop_key(key):
    def edit(obj):
        del obj[key]
        return obj
    return edit


def swap_tokenizer_file(env):
    tok = os.path.join(env.W, "tokenizer")
    name = sorted(os.listdir(tok))[0]
    with open(os.path.join(tok, name), "ab") as f:
        f.write(b" ")


def read_only_dir(env):
    os.makedirs(env.W)
    os.chmod(env.W, 0o555)
    if os.access(env.W, os.W_OK):
        os.chmod(env.W, 0o755)
        pytest.skip("running as root: a 0555 directory stays writable")


def fake_engine(manifest=None):
    """W/engines/sm90-trt8.6.0/fp16.engine (random bytes), with a manifest entry that does not match it."""
    def run(env):
        d = env.path("eng", "engines", "sm90-trt8.6.0")
        os.makedirs(d)
        data = random.Random(3).randbytes(4096)
        with open(os.path.join(d, "fp16.engine"), "wb") as f:
            f.write(data)
        if manifest is not None:
            write_json(os.path.join(d, "manifest.json"), manifest(data))
    return run


def forged_manifest(data):
    return {"engines": {"fp16.engine": {"precision": "fp16", "engine_bytes": len(data) + 1,
                                        "sha256": {"engine": "0" * 64}, "profiles": [{"min": [1, 1]}]}}}


# ---------------------------------------------------------------------------------------------
# Extra checks of the cases that succeed or write on purpose

def bench_report_written(env, result):
    reports = os.path.join(env.W, "reports")
    written = [n for n in os.listdir(reports) if n.startswith("bench-") and n.endswith(".json")]
    assert written, os.listdir(reports)
    report = read_json(os.path.join(reports, written[0]))
    assert report["exit_code"] == 3 and any(r["backend"] == "ort-cpu" for r in report["results"])


def verify_rebuilt_cache(env, result):
    cache = os.path.join(env.W, "cache")
    from trtbuild.verify.evalset import load_eval

    for name in os.listdir(cache):
        load_eval(os.path.join(cache, name))  # readable again


# ---------------------------------------------------------------------------------------------
# The table

@dataclass
class Case:
    id: str
    setup: Callable
    argv: Sequence[str]
    code: int
    expect: Optional[str]  # a substring of the last ("Error: ...") line; None: no error line expected
    allow: Sequence[str] = ()  # relative paths (prefixes) that may change: what a successful case writes
    check: Optional[Callable] = None


EXPORT = ["export", "{CK}", "-o", "{W}", "-c", "{cfg}"]
CAL = ["calibrate", "{W}", "-c", "{cfg}", "--corpus", "{corpus}", "--no-eval"]
FROM_SCALES = ["calibrate", "{W}", "-c", "{cfg}", "--from-scales"]
VERIFY = ["verify", "{W}", "-c", "{cfg}", "--eval", "{eval}"]
BUILD = ["build", "{W}", "-c", "{cfg}"]
BENCH = ["bench", "{W}", "-c", "{cfg}"]
C = "calibrated"
V = "verified"


def cal_corpus(name):
    return ["calibrate", "{W}", "-c", "{cfg}", "--corpus", "{T}/" + name, "--no-eval"]


BAD_UTF8 = "good line one\n".encode() + b"\xff\xfe bad \xc3\x28 line\n" + "good line three\n".encode()

CASES = [
    # --- export: the checkpoint
    Case("export-ckpt-is-a-file", write("CK", "not a directory"), EXPORT, 1, "is not a directory"),
    Case("export-ckpt-missing", nothing, EXPORT, 1, "is not a directory"),
    Case("export-no-config-json", ckpt_remove("config.json"), EXPORT, 1, "has no config.json"),
    Case("export-config-json-not-json", in_ckpt(lambda c: b'{"architectures": ['), EXPORT, 1, "not valid JSON"),
    Case("export-config-json-not-utf8", in_ckpt(lambda c: b'{"model_type": "\xff\xfe"}'), EXPORT, 1, "config.json"),
    Case("export-config-json-a-list", in_ckpt(lambda c: [c]), EXPORT, 1, "not a JSON object"),
    Case("export-no-classification-arch", ckpt_set(architectures=["BertModel"]), EXPORT, 1,
         "not a sequence-classification model"),
    Case("export-no-architectures", ckpt_drop("architectures"), EXPORT, 1, "not a sequence-classification model"),
    Case("export-architectures-not-a-list", ckpt_set(architectures=7), EXPORT, 1, "architectures"),
    Case("export-auto-map", ckpt_set(auto_map={"AutoModel": "modeling_x.X"}), EXPORT, 1, "custom model code"),
    Case("export-pickle-only", chain(ckpt_remove("model.safetensors"), ckpt_write("pytorch_model.bin", b"\x80\x02x")),
         EXPORT, 1, "only pickle weights"),
    Case("export-no-safetensors", ckpt_remove("model.safetensors"), EXPORT, 1, "has no model.safetensors"),
    Case("export-garbage-safetensors", ckpt_write("model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage"),
         EXPORT, 1, "could not load the model"),
    Case("export-no-tokenizer", ckpt_remove("tokenizer.json", "tokenizer_config.json"), EXPORT, 1,
         "no tokenizer files"),
    Case("export-tokenizer-json-garbage", ckpt_write("tokenizer.json", b'{"version": '), EXPORT, 1, "tokenizer"),
    Case("export-num-labels-a-string", ckpt_set(num_labels="two"), EXPORT, 1, "num_labels"),
    Case("export-num-labels-zero", ckpt_set(num_labels=0), EXPORT, 1, "num_labels"),
    Case("export-id2label-a-list", ckpt_set(id2label=["negative", "positive"]), EXPORT, 1, "id2label"),
    Case("export-roberta-on-bert-weights", ckpt_set(model_type="roberta"), EXPORT, 1, "weights"),
    Case("export-classifier-weights-missing", ckpt_without_classifier, EXPORT, 1, "missing"),
    Case("export-vocab-size-zero", ckpt_set(vocab_size=0), EXPORT, 1, "vocab_size"),
    Case("export-vocab-size-negative", ckpt_set(vocab_size=-5), EXPORT, 1, "vocab_size"),
    Case("export-vocab-size-below-the-weights", ckpt_set(vocab_size=100), EXPORT, 1, "weights"),
    Case("export-hidden-size-a-string", ckpt_set(hidden_size="32"), EXPORT, 1, "hidden_size"),
    # --- export: the output
    Case("export-existing-without-force", chain(ckpt, work()), EXPORT, 1, "pass --force"),
    Case("export-output-is-a-file", chain(ckpt, write("W", "a file")), EXPORT, 1, "not a directory"),
    Case("export-output-parent-is-a-file", chain(ckpt, write("afile", "x")),
         ["export", "{CK}", "-o", "{T}/afile/W", "-c", "{cfg}"], 1, "file"),
    Case("export-output-name-too-long", ckpt, ["export", "{CK}", "-o", "{T}/" + "x" * 300, "-c", "{cfg}"], 1,
         "too long"),
    Case("export-output-read-only", chain(ckpt, read_only_dir), EXPORT, 1, "permission denied"),
    Case("export-max-length-beyond-positions",
         chain(ckpt, config("big.yaml", "model: {name: t}\nexport: {max_length: 512}\ndata: {buckets: [16, 32]}\n")),
         ["export", "{CK}", "-o", "{W}", "-c", "{T}/big.yaml"], 1, "export.max_length"),
    Case("export-config-not-yaml", chain(ckpt, config("bad.yaml", "model: [name\n")),
         ["export", "{CK}", "-o", "{W}", "-c", "{T}/bad.yaml"], 1, "not valid YAML"),
    Case("export-config-missing", ckpt, ["export", "{CK}", "-o", "{W}", "-c", "{T}/nope.yaml"], 1, "not found"),

    # --- calibrate: the work directory
    Case("calibrate-no-workdir", nothing, CAL, 1, "holds no trtbuild export"),
    Case("calibrate-workdir-without-export", lambda env: os.makedirs(env.W), CAL, 1, "trtbuild export"),
    Case("calibrate-workdir-is-a-file", write("W", "x"), CAL, 1, "trtbuild export"),
    Case("calibrate-export-json-truncated", chain(work(), truncate("export.json")), CAL, 1, "not valid JSON"),
    Case("calibrate-export-json-a-list", chain(work(), in_work("export.json", lambda r: [r])), CAL, 1,
         "not a JSON object"),
    Case("calibrate-export-json-missing-keys", chain(work(), in_work("export.json", drop_key("vocab_size"))), CAL, 1,
         "lacks vocab_size"),
    Case("calibrate-export-json-bad-types",
         chain(work(), in_work("export.json", lambda r: dict(r, max_length="32"))), CAL, 1, "malformed"),
    Case("calibrate-onnx-edited", chain(work(), append("model.onnx")), CAL, 1, "does not match export.json"),
    Case("calibrate-onnx-truncated-sha-patched", chain(work(), truncate("model.onnx"), patch_export_sha), CAL, 1,
         "model.onnx"),
    Case("calibrate-tokenizer-missing", chain(work(), remove("tokenizer")), CAL, 1, "tokenizer/ is missing"),
    Case("calibrate-tokenizer-swapped", chain(work(), swap_tokenizer_file), CAL, 1, "tokenizer/ does not match"),
    # --- calibrate: the corpus
    Case("calibrate-corpus-missing", work(), cal_corpus("nope.txt"), 1, "not found"),
    Case("calibrate-corpus-empty", chain(work(), write("empty.txt", "")), cal_corpus("empty.txt"), 1, "no texts"),
    Case("calibrate-corpus-blank-lines", chain(work(), write("blank.txt", "\n  \n\t\n")), cal_corpus("blank.txt"), 1,
         "no texts"),
    Case("calibrate-corpus-unknown-extension", chain(work(), write("c.docx", "hello")), cal_corpus("c.docx"), 1,
         "unknown format"),
    Case("calibrate-corpus-is-a-directory", chain(work(), lambda env: os.makedirs(env.path("dir.txt"))),
         cal_corpus("dir.txt"), 1, "not found"),
    Case("calibrate-corpus-random-bytes", chain(work(), write("bin.txt", random.Random(0).randbytes(8192))),
         cal_corpus("bin.txt"), 1, "does not look like text"),
    Case("calibrate-corpus-protobuf-blob",
         chain(work(), lambda env: shutil.copy(os.path.join(env.W, "model.onnx"), env.path("blob.txt"))),
         cal_corpus("blob.txt"), 1, "does not look like text"),
    Case("calibrate-jsonl-int-texts", chain(work(), jsonl("c.jsonl", [{"text": i} for i in range(5)])),
         cal_corpus("c.jsonl"), 1, "are not strings"),
    Case("calibrate-jsonl-list-texts", chain(work(), jsonl("c.jsonl", [{"text": ["a", "b"]}] * 3)),
         cal_corpus("c.jsonl"), 1, "are not strings"),
    Case("calibrate-jsonl-dict-texts", chain(work(), jsonl("c.jsonl", [{"text": {"a": 1}}] * 3)),
         cal_corpus("c.jsonl"), 1, "are not strings"),
    Case("calibrate-jsonl-null-texts", chain(work(), jsonl("c.jsonl", [{"text": None}] * 3)),
         cal_corpus("c.jsonl"), 1, "are not strings"),
    Case("calibrate-jsonl-mixed-texts", chain(work(), jsonl("c.jsonl", [{"text": "ok"}, {"text": 3}, {"text": "x"}])),
         cal_corpus("c.jsonl"), 1, "c.jsonl"),
    Case("calibrate-jsonl-not-json", chain(work(), write("c.jsonl", "this is not json\n{also not\n")),
         cal_corpus("c.jsonl"), 1, "c.jsonl"),
    Case("calibrate-jsonl-no-text-field", chain(work(), jsonl("c.jsonl", [{"body": "hello"}] * 3)),
         cal_corpus("c.jsonl"), 1, "data.text_column"),
    Case("calibrate-csv-without-text-column", chain(work(), write("c.csv", "a,b\nhello,world\n")),
         cal_corpus("c.csv"), 1, "data.text_column"),
    Case("calibrate-parquet-garbage", chain(work(), write("c.parquet", b"PAR1 not really")),
         cal_corpus("c.parquet"), 1, "c.parquet"),
    Case("calibrate-bad-utf8-fail", chain(work(), write("u.txt", BAD_UTF8)),
         cal_corpus("u.txt") + ["--on-bad-utf8", "fail"], 1, "not UTF-8"),
    # --- calibrate: options and config
    Case("calibrate-method-bogus", work(), CAL + ["--method", "bogus"], 2, "--method"),
    Case("calibrate-max-texts-zero", work(), CAL + ["--max-texts", "0"], 2, "--max-texts"),
    Case("calibrate-batch-size-huge", work(), CAL + ["--batch-size", "100000"], 1, "calibrate.batch_size"),
    Case("calibrate-exclude-everything", work(), CAL + ["--exclude", "*"], 1, "nothing to quantize"),
    Case("calibrate-lexicon-missing", work(), CAL + ["--lexicon", "{T}/nope.tsv"], 1, "lexicon"),
    Case("calibrate-config-not-yaml", chain(work(), config("bad.yaml", "calibrate: {method: [\n")),
         ["calibrate", "{W}", "-c", "{T}/bad.yaml", "--corpus", "{corpus}", "--no-eval"], 1, "not valid YAML"),
    Case("calibrate-config-unknown-key", chain(work(), config("bad.yaml", "model: {name: t}\ncalibrate: {bins: 8}\n")),
         ["calibrate", "{W}", "-c", "{T}/bad.yaml", "--corpus", "{corpus}", "--no-eval"], 1, "unknown key"),
    Case("calibrate-config-num-bins-10", chain(work(), config("bad.yaml", "model: {name: t}\ncalibrate: {num_bins: 10}\n")),
         ["calibrate", "{W}", "-c", "{T}/bad.yaml", "--corpus", "{corpus}", "--no-eval"], 1, "multiple of 128"),
    Case("calibrate-config-num-bins-1e9",
         chain(work(), config("bad.yaml", "model: {name: t}\ncalibrate: {num_bins: 1000000000}\n")),
         ["calibrate", "{W}", "-c", "{T}/bad.yaml", "--corpus", "{corpus}", "--no-eval"], 1, "must be <="),
    Case("calibrate-config-percentile-10",
         chain(work(), config("bad.yaml", "model: {name: t}\ncalibrate: {percentile: 10}\n")),
         ["calibrate", "{W}", "-c", "{T}/bad.yaml", "--corpus", "{corpus}", "--no-eval"], 1, "calibrate.percentile"),
    Case("calibrate-config-not-a-mapping", chain(work(), config("bad.yaml", "- just\n- a list\n")),
         ["calibrate", "{W}", "-c", "{T}/bad.yaml", "--corpus", "{corpus}", "--no-eval"], 1, "mapping"),
    # --- calibrate --from-scales
    Case("from-scales-missing", work(), FROM_SCALES, 1, "scales.json not found"),
    Case("from-scales-amax-nan", chain(work(C), set_amax(float("nan"))), FROM_SCALES, 1, "amax"),
    Case("from-scales-amax-negative", chain(work(C), set_amax(-1.0)), FROM_SCALES, 1, "amax"),
    Case("from-scales-amax-zero", chain(work(C), set_amax(0.0)), FROM_SCALES, 1, "amax"),
    Case("from-scales-amax-infinite", chain(work(C), set_amax(float("inf"))), FROM_SCALES, 1, "amax"),
    Case("from-scales-amax-1e300", chain(work(C), set_amax(1e300)), FROM_SCALES, 1, "amax"),
    Case("from-scales-amax-a-string", chain(work(C), set_amax("3.5")), FROM_SCALES, 1, "amax"),
    Case("from-scales-truncated", chain(work(C), truncate("scales.json")), FROM_SCALES, 1, "not valid JSON"),
    Case("from-scales-another-onnx", chain(work(C), in_work("scales.json", lambda s: dict(s, onnx_sha256="0" * 64))),
         FROM_SCALES, 1, "another model.onnx"),
    Case("from-scales-activations-a-list", chain(work(C), in_work("scales.json", lambda s: dict(s, activations=[]))),
         FROM_SCALES, 1, "malformed"),
    Case("from-scales-activation-dropped",
         chain(work(C), in_work("scales.json", lambda s: dict(s, activations=dict(sorted(s["activations"].items())[1:])))),
         FROM_SCALES, 1, "does not match the Q/DQ placement"),

    Case("from-scales-equalization-not-a-mapping",
         chain(work(C), in_work("scales.json", lambda s: dict(s, equalization=[1, 2]))), FROM_SCALES, 1, "equalization"),
    Case("from-scales-equalization-negative-factor",
         chain(work(C), in_work("scales.json", lambda s: dict(s, equalization={"tensors": [dict(
             s["equalization"]["tensors"][0], factors=[-1.0] * len(s["equalization"]["tensors"][0]["factors"]))]}))),
         FROM_SCALES, 1, "equalization"),
    Case("from-scales-with-no-equalize", work(C), FROM_SCALES + ["--no-equalize"], 1, "cannot change it"),
    Case("calibrate-smooth-alpha-without-equalization", work(), CAL + ["--smooth-alpha", "0.8", "--no-equalize"], 1,
         "cannot go with --no-equalize"),
    Case("calibrate-smooth-alpha-above-1", work(), CAL + ["--smooth-alpha", "1.5"], 2, "--smooth-alpha"),
    Case("calibrate-trt-cache-with-equalization", work(), CAL + ["--trt-cache"], 1, "--no-equalize"),

    # --- verify
    Case("verify-no-eval-configured", work(C), ["verify", "{W}", "-c", "{cfg}"], 1, "no eval set"),
    Case("verify-eval-missing", work(C), ["verify", "{W}", "-c", "{cfg}", "--eval", "{T}/nope.jsonl"], 1, "not found"),
    Case("verify-eval-plain-text", chain(work(C), write("e.txt", "hello\n")),
         ["verify", "{W}", "-c", "{cfg}", "--eval", "{T}/e.txt"], 1, "has no labels"),
    Case("verify-eval-labels-not-of-the-model",
         chain(work(C), jsonl("e.jsonl", [{"text": "hello world", "label": "spam"}] * 4)),
         ["verify", "{W}", "-c", "{cfg}", "--eval", "{T}/e.jsonl"], 1, "not labels of this model"),
    Case("verify-eval-without-label-column", chain(work(C), jsonl("e.jsonl", [{"text": "hello world"}] * 4)),
         ["verify", "{W}", "-c", "{cfg}", "--eval", "{T}/e.jsonl"], 1, "label"),
    Case("verify-candidate-bogus-name", work(C), VERIFY + ["--candidate", "bogus"], 1, "not found"),
    Case("verify-candidate-path-missing", work(C), VERIFY + ["--candidate", "{T}/nope.onnx"], 1, "not found"),
    Case("verify-candidate-garbage-onnx", chain(work(C), write("g.onnx", random.Random(1).randbytes(2048))),
         VERIFY + ["--candidate", "{T}/g.onnx"], 1, "g.onnx"),
    Case("verify-candidate-unknown-kind", work(C), VERIFY + ["--candidate", "{W}/labels.json"], 1, "unknown kind"),
    Case("verify-candidate-fp16-no-engine", work(C), VERIFY + ["--candidate", "fp16"], 1, "trtbuild build"),
    Case("verify-qdq-after-reexport", chain(work(C), reexport_in_place), VERIFY, 1, "trtbuild calibrate"),
    Case("verify-qdq-path-after-reexport", chain(work(C), reexport_in_place),
         VERIFY + ["--candidate", "{W}/model.qdq.onnx"], 1, "trtbuild calibrate"),
    Case("verify-qdq-edited", chain(work(C), append("model.qdq.onnx")), VERIFY, 1, "trtbuild calibrate"),
    Case("verify-qdq-without-record", chain(work(C), remove("calibrate.json")), VERIFY, 1, "trtbuild calibrate"),
    Case("verify-nothing-to-verify", work(), VERIFY, 1, "trtbuild calibrate"),
    Case("verify-no-export", lambda env: os.makedirs(env.W), VERIFY + ["--candidate", "fp32"], 1, "trtbuild export"),
    Case("verify-reports-is-a-file", chain(work(C), write("r", "x")), VERIFY + ["--reports", "{T}/r"], 1, "is a file"),
    Case("verify-eval-cache-truncated-rebuilds",
         chain(work(V), lambda env: [truncate(os.path.join("cache", n))(env) for n in os.listdir(env.W + "/cache")]),
         VERIFY + ["--candidate", "fp32"], 0, None, allow=("W/cache/", "W/reports/"), check=verify_rebuilt_cache),
    Case("verify-max-flip-rate-2", work(C), VERIFY + ["--max-flip-rate", "2"], 2, "--max-flip-rate"),

    # --- build (no TensorRT here)
    Case("build-no-tensorrt", work(), BUILD, 3, "TensorRT is not installed"),
    Case("build-nothing-to-build", work(), BUILD + ["--no-fp16"], 1, "--int8"),
    Case("build-int8-without-calibration", work(), BUILD + ["--int8"], 1, "run `trtbuild calibrate"),
    Case("build-int8-only-without-calibration", work(), BUILD + ["--int8", "--no-fp16"], 1, "run `trtbuild calibrate"),
    Case("build-profiles-from-missing-corpus", work(), BUILD + ["--profiles-from", "{T}/nope.txt"], 1, "not found"),
    Case("build-no-export", lambda env: os.makedirs(env.W), BUILD, 1, "trtbuild export"),

    # --- bench
    Case("bench-shape-beyond-max-length", work(V), BENCH + ["--shape", "64x999999"], 1, "max_length"),
    Case("bench-shape-not-a-shape", work(V), BENCH + ["--shape", "abc"], 2, "BATCHxSEQ"),
    Case("bench-shape-zero", work(V), BENCH + ["--shape", "0x16"], 2, ">= 1"),
    Case("bench-rate-1e12", work(V), BENCH + ["--rate", "1e12"], 1, "must be <="),
    Case("bench-rate-1e12-names-its-key", work(V), BENCH + ["--rate", "1e12"], 1, "bench.simulate.rate"),
    Case("bench-iterations-zero", work(V), BENCH + ["--iterations", "0"], 2, "--iterations"),
    Case("bench-no-eval-cache", work(C), BENCH + ["--backend", "ort-cpu"], 1, "--no-simulate"),
    Case("bench-reports-is-a-file", chain(work(V), write("r", "x")), BENCH + ["--reports", "{T}/r"], 1, "is a file"),
    Case("bench-no-export", lambda env: os.makedirs(env.W), BENCH + ["--backend", "ort-cpu", "--no-simulate"], 1,
         "trtbuild export"),
    Case("bench-cpu-default-backends", work(V), BENCH, 3, None, allow=("W/reports/",), check=bench_report_written),

    # --- inspect
    Case("inspect-missing", nothing, ["inspect", "{T}/nope.onnx"], 1, "not found"),
    Case("inspect-directory", lambda env: os.makedirs(env.path("d.onnx")), ["inspect", "{T}/d.onnx"], 1, "not found"),
    Case("inspect-empty-onnx", write("e.onnx", b""), ["inspect", "{T}/e.onnx"], 1, "e.onnx"),
    Case("inspect-garbage-onnx", write("g.onnx", random.Random(2).randbytes(4096)), ["inspect", "{T}/g.onnx"], 1,
         "g.onnx"),
    Case("inspect-text-as-onnx", write("t.onnx", "hello, I am not a model\n" * 20), ["inspect", "{T}/t.onnx"], 1,
         "t.onnx"),
    Case("inspect-truncated-onnx", chain(work(), truncate("model.onnx")), ["inspect", "{W}/model.onnx"], 1,
         "model.onnx"),
    Case("inspect-engine-without-manifest", fake_engine(), ["inspect", "{T}/eng/engines/sm90-trt8.6.0/fp16.engine"],
         1, "no entry"),
    Case("inspect-engine-forged-manifest", fake_engine(forged_manifest),
         ["inspect", "{T}/eng/engines/sm90-trt8.6.0/fp16.engine"], 1, "corrupt or truncated"),
    Case("inspect-engine-manifest-garbage", fake_engine(lambda data: ["not", "a", "manifest"]),
         ["inspect", "{T}/eng/engines/sm90-trt8.6.0/fp16.engine"], 1, "manifest.json"),
    Case("inspect-unknown-extension", write("m.bin", b"\0" * 10), ["inspect", "{T}/m.bin"], 1, "unknown kind"),
]

assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


def _describe(result):
    text = "exit {}\n--- stdout\n{}\n--- stderr\n{}".format(result.exit_code, result.stdout, result.stderr)
    if result.exc_info is not None and not isinstance(result.exception, SystemExit):
        text += "\n--- exception\n" + "".join(traceback.format_exception(*result.exc_info))
    return text


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_hostile_input(case, base, tmp_path):
    env = Env(tmp_path, base)
    case.setup(env)
    argv = [a.format(**env.vars) for a in case.argv]
    before = tree_digest(env.tmp)
    temp_before = leftovers(env.tmp)
    try:
        result = invoke(argv)
    finally:
        if os.path.isdir(env.W):
            os.chmod(env.W, 0o755)
    detail = _describe(result)

    assert "Traceback" not in result.output and "Traceback" not in result.stderr, detail
    if case.code == 0:
        assert result.exception is None, detail
    else:
        assert isinstance(result.exception, SystemExit), detail  # click's exit, not an exception that escaped
    assert result.exit_code == case.code, detail
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    if case.expect is not None:
        lines = result.stderr.rstrip("\n").splitlines()
        assert lines and lines[-1].startswith("Error: "), detail
        assert len(errors) == 1, detail  # one line
        assert case.expect in lines[-1], detail
    else:
        assert errors == [], detail
    if case.check is not None:
        case.check(env, result)

    after = tree_digest(env.tmp)
    allowed = tuple(os.path.normpath(a) + (os.sep if a.endswith("/") else "") for a in case.allow)
    changed = [p for p, digest in before.items() if after.get(p) != digest and not p.startswith(allowed)]
    assert changed == [], "files changed or removed by the run: {}\n{}".format(changed, detail)
    assert leftovers(env.tmp) == temp_before, "temp files left behind\n" + detail
