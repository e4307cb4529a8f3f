"""The torch side of `trtbuild bench`, run in the interpreter that has torch with CUDA (on the GPU
machine: /opt/torch/.venv/bin/python, Python 3.12) as `python -m trtbuild.bench.torch_worker SPEC OUT`;
`run_torch_worker` is the parent's side of that protocol.

SPEC (JSON): {"checkpoint", "vocab_size", "measurements": [{"backend", "batch", "seq", "modes", "sim"?}],
"warmup", "iterations", "repeats", "seed"}. Backends: torch-fp32 (eager), torch-fp16 (eager, .half()), and FP16
`torch.compile` in its three modes (config.TORCH_COMPILE_MODES: default; reduce-overhead, with CUDA graphs;
max-autotune): one static compile per fixed shape, and one dynamic compile (`dynamic=True`; reduce-overhead records a
CUDA graph per shape) for the simulation's bucket x batch table ("sim" measurements). Compile times are reported.
The model is the Hugging Face checkpoint with PyTorch's SDPA attention, the fastest torch offers.
Modes: device (CUDA inputs, synchronised) and e2e (CPU inputs copied in, logits copied back).
OUT (JSON): {"torch", "cuda", "device", "attention", "results": [...], "memory", "compile_seconds": {backend: {shape
or "dynamic": s}}, "skipped"}. A backend whose compile or run fails is skipped with why; the others are measured.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import click

from trtbuild._util import noop
from trtbuild.bench.timing import time_calls, timing_stats
from trtbuild.config import TORCH_COMPILE_MODES

DEFAULT_TORCH_PYTHON = "/opt/torch/.venv/bin/python"


def _say(msg):
    print("torch: " + msg, flush=True)


def _check_weights(spec):
    """The checkpoint must still be the one the export was made from: an error string, or None."""
    import hashlib

    for name, want in (spec.get("weights_sha256") or {}).items():
        path = os.path.join(spec["checkpoint"], name)
        if not os.path.isfile(path):
            return "the checkpoint's {} is gone ({}); re-run trtbuild export".format(name, path)
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != want:
            return "{} changed since the export (its hash differs from export.json); re-run trtbuild export " \
                   "--force so torch and the engines run one model".format(path)
    return None


def run(spec):
    import torch
    from transformers import AutoModelForSequenceClassification

    out = {"torch": torch.__version__, "cuda": torch.version.cuda, "results": [], "memory": {}, "skipped": {},
           "compile_seconds": {}, "attention": "sdpa"}
    backends = []
    for m in spec["measurements"]:
        if m["backend"] not in backends:
            backends.append(m["backend"])
    if not torch.cuda.is_available():
        for b in backends:
            if b != "torch-fp32":
                out["skipped"][b] = "needs a CUDA GPU; torch sees none"
        dev = torch.device("cpu")
        out["device"] = "CPU"
    else:
        dev = torch.device("cuda")
        out["device"] = torch.cuda.get_device_name(0)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(spec["checkpoint"], attn_implementation="sdpa")
    except Exception:  # older checkpoints or transformers without SDPA for this model
        model = AutoModelForSequenceClassification.from_pretrained(spec["checkpoint"])
        out["attention"] = getattr(model.config, "_attn_implementation", "default")
    model.eval()
    uses_types = getattr(model.config, "type_vocab_size", 0) > 1
    gen = torch.Generator().manual_seed(spec.get("seed", 0))
    vocab = spec["vocab_size"]

    def inputs(batch, seq):
        low = 1000 if vocab > 2000 else 1
        feeds = {"input_ids": torch.randint(low, vocab, (batch, seq), generator=gen),
                 "attention_mask": torch.ones(batch, seq, dtype=torch.int64)}
        if uses_types:
            feeds["token_type_ids"] = torch.zeros(batch, seq, dtype=torch.int64)
        return feeds

    for backend in backends:
        if backend in out["skipped"]:
            continue
        half = backend != "torch-fp32"
        net = (model.half() if half else model.float()).to(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        mine = [m for m in spec["measurements"] if m["backend"] == backend]
        # the fixed shapes: one static compile each; the simulation's bucket x batch table: one dynamic compile
        fixed, table = [m for m in mine if not m.get("sim")], [m for m in mine if m.get("sim")]
        try:
            for group, dynamic in ((fixed, False), (table, True)):
                fn = net
                for i, m in enumerate(group):
                    if backend in TORCH_COMPILE_MODES and (not dynamic or i == 0):
                        fn = _compiled(torch, net, backend, dynamic)
                        t0 = time.perf_counter()
                        with torch.inference_mode():
                            fn(**{k: v.to(dev) for k, v in inputs(m["batch"], m["seq"]).items()})
                        sync()
                        key = "dynamic" if dynamic else "b{}xs{}".format(m["batch"], m["seq"])
                        out["compile_seconds"].setdefault(backend, {})[key] = round(time.perf_counter() - t0, 1)
                    _measure(torch, fn, m, inputs(m["batch"], m["seq"]), dev, sync, spec, backend, out)
        except Exception as e:  # e.g. max-autotune without a working Triton: say so, measure the others
            out["results"] = [r for r in out["results"] if r["backend"] != backend]
            out["skipped"][backend] = "{} failed here: {}: {}".format(
                backend, type(e).__name__, (str(e).strip().splitlines() or [""])[0][:300])
        if dev.type == "cuda":
            out["memory"][backend] = {"peak_allocated_bytes": int(torch.cuda.max_memory_allocated())}
        if backend in TORCH_COMPILE_MODES:
            torch._dynamo.reset()
    return out


def _compiled(torch, net, backend, dynamic):
    """`torch.compile` in the backend's mode, after a reset (no earlier shape's graphs or recompile budget)."""
    torch._dynamo.reset()
    mode = TORCH_COMPILE_MODES[backend]
    return torch.compile(net, mode=None if mode == "default" else mode, dynamic=dynamic)


def _measure(torch, fn, m, host, dev, sync, spec, backend, out):
    """Time one measurement (its modes: device, e2e) and append the rows to out["results"]."""
    batch, seq = m["batch"], m["seq"]
    on_dev = {k: v.to(dev) for k, v in host.items()}

    def device_step():
        with torch.inference_mode():
            fn(**on_dev).logits
        sync()

    def e2e_step():
        with torch.inference_mode():
            fn(**{k: v.to(dev) for k, v in host.items()}).logits.float().cpu()
        sync()

    for mode in m["modes"]:
        step = device_step if mode == "device" else e2e_step
        iterations = spec["iterations"] if not m.get("sim") else max(10, spec["iterations"] // 5)
        repeats = spec["repeats"] if not m.get("sim") else 1
        stats = timing_stats(time_calls(step, spec["warmup"], iterations, repeats), batch)
        row = dict(backend=backend, batch=batch, seq=seq, mode=mode, **stats)
        if m.get("sim"):
            row["sim"] = True
        out["results"].append(row)
        if not m.get("sim"):
            _say("{} B{} S{} {}: {:.2f} ms".format(backend, batch, seq, mode, stats["ms"]))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
def main(spec, out):
    """Measure the torch backends of SPEC (JSON) and write OUT (JSON)."""
    with open(spec, encoding="utf-8") as f:
        plan = json.load(f)
    error = _check_weights(plan)
    result = {"error": error} if error else run(plan)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f)


def _torch_python(config):
    if config.bench.torch_python:
        return config.bench.torch_python
    if os.environ.get("TRTBUILD_TORCH_PYTHON"):
        return os.environ["TRTBUILD_TORCH_PYTHON"]
    if os.path.isfile(DEFAULT_TORCH_PYTHON):
        return DEFAULT_TORCH_PYTHON
    return sys.executable


def run_torch_worker(config, plan, progress=noop):
    """Run this module (`main`) in the torch interpreter on `plan` (a spec dict); returns its JSON."""
    python = _torch_python(config)
    with tempfile.TemporaryDirectory(prefix="trtbuild-bench-") as tmp:
        spec_path, out_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "out.json")
        with open(spec_path, "w", encoding="utf-8") as f:
            json.dump(plan, f)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = root
        if os.path.realpath(python) != os.path.realpath(sys.executable):
            # trtpy points PYTHONHOME and LD_LIBRARY_PATH at its Python 3.9 and TensorRT's libraries
            # (with cuBLAS stand-ins): the torch interpreter must not see them
            env.pop("PYTHONHOME", None)
            home = os.environ.get("PYTHONHOME", "")
            trt_home = os.path.dirname(os.path.dirname(home)) if home else "/opt/trt86"
            kept = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and not p.startswith(trt_home)]
            env["LD_LIBRARY_PATH"] = os.pathsep.join(kept)
        progress("torch: {} -m trtbuild.bench.torch_worker ({} measurements)".format(python, len(plan["measurements"])))
        try:
            proc = subprocess.run([python, "-m", "trtbuild.bench.torch_worker", spec_path, out_path], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                                  timeout=config.bench.torch_timeout_s)
        except FileNotFoundError:
            return {"error": "torch interpreter {} not found; set bench.torch_python".format(python)}
        except subprocess.TimeoutExpired:
            return {"error": "torch worker ran past bench.torch_timeout_s = {} s".format(config.bench.torch_timeout_s)}
        for line in proc.stdout.splitlines():
            if line.startswith("torch:"):
                progress(line)
        if proc.returncode != 0 or not os.path.isfile(out_path):
            tail = " | ".join(proc.stdout.strip().splitlines()[-3:])
            return {"error": "torch worker failed (exit {}): {}".format(proc.returncode, tail[-400:])}
        with open(out_path, encoding="utf-8") as f:
            return json.load(f)


if __name__ == "__main__":
    main()
