"""The torch side of `trtbuild bench`, run in the interpreter that has torch with CUDA (on the GPU
machine: /opt/torch/.venv/bin/python, Python 3.12) as `python -m trtbuild.bench_torch SPEC OUT`.

SPEC (JSON): {"checkpoint", "vocab_size", "measurements": [{"backend", "batch", "seq", "modes", "sim"?}],
"warmup", "iterations", "repeats", "seed"}. Backends: torch-fp32 (eager), torch-fp16 (eager, .half()),
torch-compile-fp16 (`torch.compile` default mode, recompiled per shape, compile time reported).
The model is the Hugging Face checkpoint with PyTorch's SDPA attention, the fastest torch offers.
Modes: device (CUDA inputs, synchronised) and e2e (CPU inputs copied in, logits copied back).
OUT (JSON): {"torch", "cuda", "device", "attention", "results": [...], "memory", "compile_seconds", "skipped"}.
"""

import json
import sys
import time

from trtbuild.bench import time_calls, timing_stats


def _say(msg):
    print("torch: " + msg, flush=True)


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
        for m in [m for m in spec["measurements"] if m["backend"] == backend]:
            batch, seq = m["batch"], m["seq"]
            host = inputs(batch, seq)
            fn = net
            if backend == "torch-compile-fp16":
                torch._dynamo.reset()
                fn = torch.compile(net)
                t0 = time.perf_counter()
                with torch.inference_mode():
                    fn(**{k: v.to(dev) for k, v in host.items()})
                sync()
                out["compile_seconds"]["b{}xs{}".format(batch, seq)] = round(time.perf_counter() - t0, 1)
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
        if dev.type == "cuda":
            out["memory"][backend] = {"peak_allocated_bytes": int(torch.cuda.max_memory_allocated())}
        if backend == "torch-compile-fp16":
            torch._dynamo.reset()
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m trtbuild.bench_torch SPEC.json OUT.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        spec = json.load(f)
    result = run(spec)
    with open(argv[1], "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
