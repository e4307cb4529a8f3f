"""`trtbuild verify`: accuracy drift of a candidate (Q/DQ ONNX, engine, any ONNX) against the ONNX
Runtime FP32 baseline, overall and per slice, as a CI gate.

1. Eval set (`evalset.py`): the labelled eval files the config names, tokenized into the length buckets,
   tagged with their slices, and run once through the exported FP32 ONNX in ONNX Runtime (CPU); cached.
2. Candidate (`run_candidate`): the same padded batches through the candidate's runner
   (`trtbuild.backends.runner_for`: ONNX Runtime for .onnx, TensorRT for a trtbuild engine).
3. Metrics (`metrics.py`), overall and for every slice (each eval file, slang vs plain text by the
   lexicon (data.lexicon, else the one shipped with trtbuild), `text:slang-unseen`: texts with slang the
   calibration corpus never uses, length bucket, true label).
4. Gate and report (`report.py`; defaults: macro-F1 drop <= 0.8 pt overall, flip rate <= 1 %, per-slice
   macro-F1 drop <= 2 pt for slices of at least 30 texts): a `VerifyReport` that is truthy when every
   gate passes and writes JSON, JUnit XML and HTML.
`parity.py` compares logits on a small cached sample (the GPU experiments' parity check).
"""

import os
import time

from trtbuild._util import Result, noop
from trtbuild.backends import ENGINE_EXTENSIONS, runner_for
from trtbuild.errors import EXIT_OK, TrtbuildError
from trtbuild.verify.evalset import prepare_eval, run_batches
from trtbuild.verify.report import evaluate
from trtbuild.workdir import WorkDir, check_calibration, check_export, check_report_dir, locked

CANDIDATE_NAMES = ("qdq", "fp8", "fp16", "int8", "fp32", "fp16-onnx")


class VerifyResult(Result):
    """The reports of one `trtbuild verify` run: exit 0 when every candidate passes, 4 when one fails."""

    def __init__(self, reports):
        self.reports = list(reports)

    @property
    def exit_code(self):
        return max((r.exit_code for r in self.reports), default=EXIT_OK)

    def to_dict(self):
        return [r.to_dict() for r in self.reports]

    def summary(self):
        lines = []
        for r in self.reports:
            lines.append(r.summary())
            lines.append("  {:<26} {:>5} {:>8} {:>8} {:>8}  {:<17} {:>6}".format(
                "slice", "texts", "F1 base", "F1 cand", "drop", "95% CI", "flips"))
            for name, m in r.slices.items():
                ci = m["macro_f1_drop_ci95"]
                lines.append("  {:<26} {:>5} {:>7.2%} {:>7.2%} {:>+7.2f}  {:<17} {:>6.1%}".format(
                    name, m["texts"], m["baseline"]["macro_f1"], m["candidate"]["macro_f1"], m["macro_f1_drop_pt"],
                    "[{:+.2f}, {:+.2f}]".format(*ci) if ci else "", m["flip_rate"]))
            if r.slang_unseen_terms:
                lines.append("  slang unseen in calibration: " + ", ".join(
                    "{} ({})".format(t["term"], t["texts"]) for t in r.slang_unseen_terms[:8]))
            for g in r.failed_gates():
                lines.append("  FAILED: " + g.describe())
            lines.append("  reports: {}".format(", ".join(r.paths[k] for k in ("json", "junit", "html"))))
        return "\n".join(lines)


def run_candidate(evalset, candidate, batch_size=32, show_bar=False, runner=None):
    """Logits of a candidate (a path, or an open runner) over the eval set; refuses mismatched inputs."""
    return _logits(candidate, evalset.batches, evalset.input_names, len(evalset), len(evalset.label_names),
                   batch_size, show_bar, runner)


def _logits(candidate, batches, input_names, n, n_labels, batch_size, show_bar=False, runner=None):
    own = runner is None
    runner = runner or runner_for(candidate)
    try:
        got, want = sorted(runner.input_names), sorted(input_names)
        if got != want:
            raise TrtbuildError("candidate {} takes inputs {}, the baseline model takes {}; verify a build of the "
                                "same export".format(candidate, ", ".join(got), ", ".join(want)))
        return {"logits": run_batches(runner, batches, n, n_labels, batch_size, show_bar,
                                      os.path.basename(str(candidate))), "device": getattr(runner, "device", None),
                "runner": type(runner).__name__}
    finally:
        if own:
            runner.close()


def resolve_candidate(workdir, candidate):
    """A path, or a name: qdq (WORKDIR/model.qdq.onnx), fp8 (model.fp8.onnx: calibrate --precision fp8), fp32
    (model.onnx), fp16-onnx (model.onnx cast to FP16 as strongly typed builds take it, made once into the cache),
    fp16 / int8 (the engine built for this GPU and TensorRT, or the only one there is). Returns (path, target
    name)."""
    from trtbuild.backends.trt.manifest import find_engine

    wd = WorkDir(workdir)
    if candidate in ("qdq", "fp8", "fp32"):
        path = {"qdq": wd.qdq_onnx, "fp8": wd.fp8_onnx, "fp32": wd.onnx}[candidate]
        if candidate == "fp32" or not os.path.isfile(wd.export_json):
            check_export(wd.root)
        if not os.path.isfile(path):
            raise TrtbuildError("{} not found; run `trtbuild calibrate {}{}` first".format(
                path, wd.root, " --precision fp8" if candidate == "fp8" else ""))
        if candidate != "fp32":
            check_calibration(wd.root, fp8=candidate == "fp8")
        return path, candidate
    if candidate == "fp16-onnx":
        from trtbuild.backends.fp16 import write_fp16_onnx

        record = check_export(wd.root)
        path = os.path.join(wd.cache, "model.fp16-{}.onnx".format(record["sha256"]["onnx"][:16]))
        if not os.path.isfile(path):
            os.makedirs(wd.cache, exist_ok=True)
            write_fp16_onnx(wd.onnx, path)
        return path, candidate
    if candidate in ("fp16", "int8"):
        path = find_engine(wd.root, candidate)
        return path, "{}-{}".format(candidate, os.path.basename(os.path.dirname(path)))
    if not os.path.exists(candidate):
        raise TrtbuildError("candidate {} not found; pass an .onnx or .engine path, or one of {}".format(
            candidate, ", ".join(CANDIDATE_NAMES)))
    path = candidate
    stem = os.path.splitext(os.path.basename(path))[0].replace(".", "-")
    if os.path.splitext(path)[1].lower() in ENGINE_EXTENSIONS:
        stem = "{}-{}".format(stem, os.path.basename(os.path.dirname(os.path.abspath(path))))
    for name, own in (("qdq", wd.qdq_onnx), ("fp8", wd.fp8_onnx)):
        if os.path.abspath(path) == os.path.abspath(own):
            check_calibration(wd.root, fp8=name == "fp8")
            stem = name
    return path, stem


def verify_candidate(config, candidate, evalset=None, eval_paths=None, report_dir=None, progress=noop,
                     show_bar=False, write=True, target=None):
    """Verify one candidate (path or name); returns its VerifyReport (written under report_dir)."""
    evalset = evalset or prepare_eval(config, eval_paths, progress=progress, show_bar=show_bar)
    path, name = resolve_candidate(config.workdir, candidate)
    target = target or name
    start = time.perf_counter()
    progress("candidate {}: {} texts".format(path, len(evalset)))
    args = (path, evalset.batches, evalset.input_names, len(evalset), len(evalset.label_names), config.verify.batch_size)
    if os.path.splitext(path)[1].lower() in ENGINE_EXTENSIONS:
        # TensorRT runs in a child process: a native crash there is a one-line error here, never a report
        from trtbuild.backends.trt.isolated import call

        out = call(_logits, *args, what="running {} on the eval set".format(path))
    else:
        out = _logits(*args, show_bar=show_bar)
    report = evaluate(evalset, out["logits"], config.verify, target, path, out["runner"], WorkDir(config.workdir).onnx,
                      seconds=time.perf_counter() - start, device=out["device"])
    if write:
        report.write(report_dir or WorkDir(config.workdir).reports)
    return report


def default_candidates(workdir):
    """What `trtbuild verify` checks without --candidate: the Q/DQ ONNX when there is one."""
    if os.path.isfile(WorkDir(workdir).qdq_onnx):
        return ["qdq"]
    raise TrtbuildError("nothing to verify in {}: run `trtbuild calibrate` first, or pass --candidate PATH "
                        "(an .onnx or a trtbuild .engine) or a name ({})".format(workdir, ", ".join(CANDIDATE_NAMES)))


def verify(config, candidates=None, eval_paths=None, report_dir=None, progress=noop, show_bar=False):
    """Verify each candidate against the FP32 baseline; returns a VerifyResult (every report written)."""
    with locked(config.workdir, create=False):
        candidates = list(candidates or default_candidates(config.workdir))
        for c in candidates:  # resolve every name first: a typo fails before the baseline runs
            resolve_candidate(config.workdir, c)
        if report_dir is not None:
            check_report_dir(report_dir)
        evalset = prepare_eval(config, eval_paths, progress=progress, show_bar=show_bar)
        return VerifyResult([verify_candidate(config, c, evalset=evalset, report_dir=report_dir, progress=progress,
                                              show_bar=show_bar) for c in candidates])
