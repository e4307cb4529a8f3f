"""The bench report: raw timings per backend, shape and mode; simulations; ratios; as JSON, a PNG and a table."""

import os
from dataclasses import dataclass, field
from typing import Dict, List

from trtbuild._util import Result
from trtbuild.config import TORCH_BACKENDS, TRT_BACKENDS
from trtbuild.html import matplotlib_pyplot, save_png
from trtbuild.workdir import atomic_write_json

REPORT_FORMAT = "trtbuild-bench/2"
TORCH_FP16 = tuple(b for b in TORCH_BACKENDS if b != "torch-fp32")  # the peers the engines are measured against
TORCH_LABELS = {"torch-fp16": "torch_eager_fp16", "torch-compile-fp16": "torch_compile",
                "torch-compile-reduce-overhead-fp16": "torch_reduce_overhead",
                "torch-compile-max-autotune-fp16": "torch_max_autotune"}


@dataclass
class BenchReport(Result):
    """Raw timings per backend, shape and mode; simulations; ratios. `write()` saves JSON + PNG."""

    config_name: str
    device: Dict
    results: List[Dict]  # {"backend", "batch", "seq", "mode", **timing_stats}
    simulations: List[Dict] = field(default_factory=list)
    memory: Dict = field(default_factory=dict)
    skipped: Dict = field(default_factory=dict)  # backend -> why it was not measured
    info: Dict = field(default_factory=dict)
    seconds: float = 0.0
    paths: Dict = field(default_factory=dict)
    missing: Dict = field(default_factory=dict)  # backend asked for but not measured -> the exit code that gives

    @property
    def exit_code(self):
        """0 when every backend asked for was measured; else 3 (no GPU / TensorRT) or 1 (anything else)."""
        return max(self.missing.values(), default=0)

    def lookup(self, backend, batch, seq, mode="device"):
        for r in self.results:
            if (r["backend"], r["batch"], r["seq"], r["mode"]) == (backend, batch, seq, mode):
                return r
        return None

    def engines(self):
        """The TensorRT backends measured: trt-fp16, trt-int8, then engines of other work directories
        (`trt-<precision>@<work directory>`, bench --engine), in the order they were measured."""
        seen = [b for b in TRT_BACKENDS if any(r["backend"] == b for r in self.results)]
        for r in self.results:
            if r["backend"].startswith("trt-") and r["backend"] not in seen:
                seen.append(r["backend"])
        return seen

    def best_torch(self, batch, seq):
        """The fastest FP16 torch backend at a shape (device mode): (backend, ms), or (None, None)."""
        rows = [r for r in self.results if r["backend"] in TORCH_FP16 and (r["batch"], r["seq"], r["mode"]) ==
                (batch, seq, "device")]
        best = min(rows, key=lambda r: r["ms"], default=None)
        return (best["backend"], best["ms"]) if best else (None, None)

    def ratios(self):
        """Per shape (device mode, time of the reference / time of the engine): each engine against the fastest FP16
        torch backend measured in this run at that shape (`*_vs_best_torch`, `best_torch` names it) and against
        each torch backend; the engine without its CUDA graph against the best torch (`*_plain_vs_best_torch`).
        Simulations: each engine's sustained rate over the best torch backend's, under the same bucketed batching,
        and over torch eager FP16 padded to the longest bucket (the seed's "before")."""
        out = {}
        for batch, seq in sorted({(r["batch"], r["seq"]) for r in self.results}):
            row = {}
            best, best_ms = self.best_torch(batch, seq)
            if best:
                row["best_torch"] = best
            for engine in self.engines():
                mine = self.lookup(engine, batch, seq)
                plain = self.lookup(engine, batch, seq, "device-plain")
                short = engine[len("trt-"):]
                if mine and best:
                    row["{}_vs_best_torch".format(short)] = round(best_ms / mine["ms"], 3)
                if plain and best:
                    row["{}_plain_vs_best_torch".format(short)] = round(best_ms / plain["ms"], 3)
                for ref in TORCH_FP16:
                    theirs = self.lookup(ref, batch, seq)
                    if mine and theirs:
                        row["{}_vs_{}".format(short, TORCH_LABELS[ref])] = round(theirs["ms"] / mine["ms"], 3)
            if len(row) > 1:
                out["b{}xs{}".format(batch, seq)] = row
        sims = {s["backend"]: s for s in self.simulations}
        torch_sims = [sims[b] for b in TORCH_FP16 if b in sims and sims[b]["sustained_rate"]]
        best_sim = max(torch_sims, key=lambda s: s["sustained_rate"], default=None)
        padded = sims.get("torch-fp16 padded")
        for engine in self.engines():
            if engine not in sims:
                continue
            row = out.setdefault("simulation", {})
            short = engine[len("trt-"):]
            if best_sim:
                row["best_torch"] = best_sim["backend"]
                row["{}_vs_best_torch".format(short)] = round(sims[engine]["sustained_rate"] / best_sim["sustained_rate"], 3)
            if padded and padded["sustained_rate"]:
                row["{}_vs_torch_fp16_padded".format(short)] = round(
                    sims[engine]["sustained_rate"] / padded["sustained_rate"], 3)
        return out

    def to_dict(self):
        ratios = self.ratios()
        headline = ratios.get("b64xs128", {})
        return {"format": REPORT_FORMAT, "config": self.config_name, "device": self.device, "seconds": self.seconds,
                "int8_vs_best_torch": headline.get("int8_vs_best_torch"),
                "fp16_vs_best_torch": headline.get("fp16_vs_best_torch"), "best_torch": headline.get("best_torch"),
                "ratios": ratios, "results": self.results, "simulations": self.simulations, "memory": self.memory,
                "skipped": self.skipped, "missing": self.missing, "exit_code": self.exit_code, "info": self.info,
                "paths": self.paths,
                "notes": {"device": "inputs already on the GPU, launch to synchronised stream (TensorRT: one CUDA "
                                    "graph launch where info.cuda_graph.engines says True)",
                          "device-plain": "TensorRT only, with a CUDA graph: the same engine and shape enqueued "
                                          "without it (ratios *_plain_vs_best_torch)",
                          "torch": "eager FP16 with SDPA, and torch.compile FP16 in its default, reduce-overhead "
                                   "(CUDA graphs) and max-autotune modes (compile seconds: device.torch_compile_seconds)",
                          "peak_share": "FLOPs per sequence (info.flops) x sequences/s / the GPU's dense FP16 peak, "
                                        "or INT8 peak for trt-int8",
                          "e2e": "host inputs copied in and logits copied back, synchronised",
                          "ms": "median of the repeats' median per-iteration time; seq_per_s = batch / ms",
                          "ratios": "time of the reference / time of the engine at the same shape (device mode); "
                                    "best_torch: the fastest FP16 torch backend of this run at that shape"}}

    def table(self):
        """A compact text table: one row per backend and mode, one column per shape (ms, seq/s and, in device mode,
        the share of the GPU's peak)."""
        shapes = sorted({(r["batch"], r["seq"]) for r in self.results})
        lines = ["{:<34} {:<12} ".format("backend", "mode") + "".join(
            "{:>30}".format("B{} S{}".format(b, s)) for b, s in shapes)]
        seen = []
        for r in self.results:
            key = (r["backend"], r["mode"])
            if key not in seen:
                seen.append(key)
        for backend, mode in seen:
            cells = []
            for b, s in shapes:
                r = self.lookup(backend, b, s, mode)
                share = " {:>3.0%}".format(r["peak_share"]) if r and r.get("peak_share") is not None else "     "
                cells.append("{:>30}".format("{:.2f} ms {:>8,.0f}/s{}".format(r["ms"], r["seq_per_s"] or 0, share)
                                             if r else "-"))
            lines.append("{:<34} {:<12} ".format(backend, mode) + "".join(cells))
        for name, why in self.skipped.items():
            lines.append("{:<34} skipped: {}".format(name, why))
        for s in self.simulations:
            a = s["at_rate"]
            lines.append("simulation {:<34} at {:,.0f}/s: p50 {:.1f} ms, p99 {:.1f} ms, mean batch {:.1f}; sustained "
                         "{:,.0f}/s within P99 <= window".format(s["backend"], a["rate"], a["p50_ms"], a["p99_ms"],
                                                                  a["mean_batch"], s["sustained_rate"]))
        for shape, row in self.ratios().items():
            lines.append("ratios {}: {}".format(shape, ", ".join(
                "{} {:.2f}x".format(k, v) if isinstance(v, float) else "{} {}".format(k, v) for k, v in row.items())))
        return "\n".join(lines)

    def summary(self):
        return "\n".join(["bench {} on {} ({:.0f} s)".format(self.config_name, self.device.get("gpu") or "CPU",
                                                           self.seconds),
                          self.table(), "reports: {}".format(", ".join(self.paths.values()))])

    def write(self, report_dir):
        os.makedirs(report_dir, exist_ok=True)
        slug = "".join(c if c.isalnum() else "-" for c in self.device.get("gpu", "cpu").lower()).strip("-")
        slug = "-".join(p for p in slug.split("-") if p) or "cpu"
        base = os.path.join(report_dir, "bench-{}".format(slug))
        self.paths = {"json": base + ".json"}
        png = plot(self, base + ".png")
        if png:
            self.paths["png"] = png
        atomic_write_json(self.paths["json"], self.to_dict())
        return self.paths


def plot(report, path):
    """Throughput per backend and shape (device mode, log scale) and the simulations' latency CDF, as a PNG;
    returns the path, or None without matplotlib."""
    plt = matplotlib_pyplot()
    if plt is None:
        return None
    shapes = sorted({(r["batch"], r["seq"]) for r in report.results})
    backends = []
    for r in report.results:
        if r["backend"] not in backends:
            backends.append(r["backend"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    width = 0.8 / max(len(backends), 1)
    for k, backend in enumerate(backends):
        values = []
        for b, s in shapes:
            r = report.lookup(backend, b, s, "device") or report.lookup(backend, b, s, "e2e")
            values.append(r["seq_per_s"] if r else 0)
        ax.bar([i + k * width for i in range(len(shapes))], values, width, label=backend)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(shapes))])
    ax.set_xticklabels(["B{} S{}".format(b, s) for b, s in shapes])
    ax.set_yscale("log")
    ax.set_ylabel("sequences / s (device mode; ORT: CPU)")
    ax.set_title("throughput per backend and shape")
    ax.legend(fontsize=8)
    ax = axes[1]
    for s in report.simulations:
        cdf = s["latency_cdf_ms"]
        ax.plot(cdf, [i / (len(cdf) - 1) for i in range(len(cdf))], label="{} (p99 {:.1f} ms)".format(
            s["backend"], s["at_rate"]["p99_ms"]))
    if report.simulations:
        window = report.info.get("simulate", {}).get("window_ms")
        if window:
            ax.axvline(window, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("request latency, ms (simulated at {:,.0f} texts/s)".format(report.simulations[0]["at_rate"]["rate"]))
        ax.set_ylabel("share of requests")
        ax.set_title("dynamic batching: latency CDF")
        ax.legend(fontsize=8)
    else:
        ax.set_axis_off()
    fig.suptitle("{} on {}".format(report.config_name, report.device.get("gpu", "CPU")))
    fig.tight_layout()
    return save_png(fig, path)
