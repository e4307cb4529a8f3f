"""Signals and concurrency with real `python -m trtbuild` processes: Ctrl-C is exit 130 and SIGTERM 143, both
leaving nothing half-written; after a SIGKILL at any point the work directory holds the old unit or a complete new
one (never a record that vouches for a mix), and the next run sweeps what the killed one left; two runs on one
work directory: one works, the other fails at once naming the holder."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner
from helpers import ROOT, leftovers, tree_digest

from trtbuild.cli import cli
from trtbuild.errors import TrtbuildError
from trtbuild.workdir import check_calibration, check_export, sha256_file

TINY_CONFIG = "model: {name: tiny}\nexport: {max_length: 32}\ndata: {buckets: [16, 32]}\n"
WORDS = "the quick brown fox 我 不 好 的 了 是 abc def ghij klm 123 45".split()
EXPORT_FILES = ("model.onnx", "export.json", "labels.json", "tokenizer")


def _corpus(path, n, seed=0):
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            f.write(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_checkpoint):
    """A tiny config, a big corpus (calibration takes seconds), a small one, and an exported + calibrated work
    directory to copy."""
    root = tmp_path_factory.mktemp("interrupts")
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY_CONFIG, encoding="utf-8")
    big = _corpus(root / "big.txt", 4000)
    medium = _corpus(root / "medium.txt", 1500, seed=2)
    small = _corpus(root / "small.txt", 120, seed=1)
    work = str(root / "calibrated")
    runner = CliRunner()
    r = runner.invoke(cli, ["export", tiny_checkpoint, "-o", work, "-c", str(cfg)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["calibrate", work, "-c", str(cfg), "--corpus", small, "--no-eval"])
    assert r.exit_code == 0, r.output
    return {"cfg": str(cfg), "big": big, "medium": medium, "small": small, "work": work, "ckpt": tiny_checkpoint}


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as in a terminal, whatever the test runner's parent ignores


class Run:
    """`python -m trtbuild ARGS` from the repository root, its output collected line by line as it comes."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "trtbuild"] + [str(a) for a in args], cwd=ROOT,
                                     env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     universal_newlines=True, preexec_fn=_default_sigint)
        self.started = time.monotonic()
        self.out, self.err = [], []
        self._threads = [threading.Thread(target=self._pump, args=(s, into), daemon=True)
                         for s, into in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(stream, into):
        for line in stream:  # universal newlines: tqdm's \r ends a line too
            into.append(line.rstrip("\n"))

    @property
    def pid(self):
        return self.proc.pid

    def seen(self, text):
        return any(text in line for line in list(self.err))

    def wait_for(self, text, timeout=30):
        """Until stderr shows `text` (True), the process ends or the timeout passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.seen(text):
                return True
            if self.proc.poll() is not None:
                time.sleep(0.05)
                return self.seen(text)
            time.sleep(0.01)
        return False

    def wait_until(self, seconds):
        time.sleep(max(0.0, self.started + seconds - time.monotonic()))

    def finish(self, timeout=60):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("trtbuild did not end within {} s:\n{}".format(timeout, self.stderr))
        for t in self._threads:
            t.join(5)
        return rc

    @property
    def stderr(self):
        return "\n".join(self.err)

    def describe(self):
        return "exit {}\n--- stdout\n{}\n--- stderr\n{}".format(self.proc.returncode, "\n".join(self.out), self.stderr)


def _copy(prepared, tmp_path, name="W"):
    dst = str(tmp_path / name)
    shutil.copytree(prepared["work"], dst)
    return dst


def _visible(digest):
    """A tree digest without hidden entries (temp files, staging directories, the lock info)."""
    return {p: d for p, d in digest.items() if not any(part.startswith(".") for part in p.split(os.sep))}


def _export_part(digest):
    return {p: d for p, d in digest.items() if p.split(os.sep)[0] in EXPORT_FILES}


def check_calibration_unit(work, before):
    """The old files (byte-identical), or a complete new calibration that calibrate.json vouches for, or no record
    at all (a one-line error saying to re-run calibrate); never a record naming other bytes. Returns which."""
    after = _visible(tree_digest(work))
    assert _export_part(after) == _export_part(before), "the export changed under calibrate"
    if after == before:
        return "old"
    if os.path.isfile(os.path.join(work, "calibrate.json")):
        with open(os.path.join(work, "calibrate.json"), encoding="utf-8") as f:
            outputs = json.load(f)["outputs"]
        for name in ("model.qdq.onnx", "scales.json"):
            assert sha256_file(os.path.join(work, name)) == outputs[name], name + " is not what calibrate.json names"
        check_calibration(work)
        return "new"
    with pytest.raises(TrtbuildError) as e:
        check_calibration(work)
    assert "\n" not in str(e.value) and "trtbuild calibrate" in str(e.value)
    return "no record"


def calibrate_args(work, prepared, corpus="big"):
    return ["calibrate", work, "-c", prepared["cfg"], "--corpus", prepared[corpus], "--no-eval"]


# ---------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM: exit 130 / 143, nothing half-written, nothing left behind

def concurrently(scenarios):
    """Run {name: function} each in its own thread (the runs are independent subprocesses: on a 2-core machine two
    at a time take little more than one); fail with every scenario's failure, by name."""
    failures = {}

    def run(name, fn):
        try:
            fn()
        except BaseException as e:  # noqa: B902 - reported below, by scenario
            failures[name] = "{}: {}".format(type(e).__name__, e)

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in scenarios.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not failures, "\n\n".join("[{}] {}".format(k, v) for k, v in sorted(failures.items()))


SIGNALS = [pytest.param(signal.SIGINT, 130, "Aborted (interrupted)", id="SIGINT"),
           pytest.param(signal.SIGTERM, 143, "Terminated (SIGTERM)", id="SIGTERM")]


def _bar_moving(run):
    """tqdm's bar past 0 %: ONNX Runtime is running the statistics (the equalization pass's or the histograms')."""
    return any(line.startswith(("calibrating:", "channel max:", "statistics:")) and "| 0/" not in line
               for line in list(run.err))


def interrupt_calibration(prepared, work, sig, code, said, moment):
    """statistics-start: the signal goes as soon as "[3/5]" shows (ONNX Runtime is being imported and set up);
    statistics-running: once the progress bar moves."""
    before = _visible(tree_digest(work))
    run = Run(*calibrate_args(work, prepared))
    assert run.wait_for("[3/5]", timeout=60), run.describe()
    if moment == "statistics-running":
        deadline = time.monotonic() + 30
        while not _bar_moving(run) and run.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    late = run.seen("[5/5]")  # the statistics were already done: the commit may have started
    run.proc.send_signal(sig)
    rc = run.finish()
    assert rc == code, run.describe()
    assert "Traceback" not in run.stderr, run.describe()
    assert run.err[-1].startswith(said), run.describe()
    assert leftovers(work) == [], run.describe()
    state = check_calibration_unit(work, before)
    if not late:
        assert state == "old", run.describe()  # interrupted before the commit: every file as it was


@pytest.mark.parametrize("sig, code, said", SIGNALS)
def test_calibrate_interrupted(prepared, tmp_path, sig, code, said):
    """Exit 130 / 143 with one line, no traceback, no temp file, every file as it was: the signal sent as the
    statistics start (as soon as "[3/5]" shows) and while they run, two runs side by side."""
    concurrently({moment: (lambda m=moment: interrupt_calibration(prepared, _copy(prepared, tmp_path, m), sig, code,
                                                                  said, m))
                  for moment in ("statistics-start", "statistics-running")})


# ---------------------------------------------------------------------------------------------
# SIGKILL: no handler runs; the records keep the unit honest and the next run sweeps the rest

def kill_calibration_then_rerun(prepared, work, when):
    before = _visible(tree_digest(work))
    run = Run(*calibrate_args(work, prepared))
    if isinstance(when, str):
        assert run.wait_for(when, timeout=60), run.describe()
    else:
        run.wait_until(when)
    run.proc.kill()
    run.finish()
    check_calibration_unit(work, before)

    again = Run(*calibrate_args(work, prepared, "small"))
    assert again.finish(timeout=120) == 0, again.describe()
    assert leftovers(work) == [], again.describe()  # the sweep removed what the killed run left
    check_calibration(work)


def test_calibrate_killed_then_rerun(prepared, tmp_path):
    """SIGKILL as the corpus loads ([1/5]: the lock is held, its info file written), as the statistics start
    ([3/5]) and as the outputs are written ([5/5]): the old unit or a whole new one, and the next calibrate
    succeeds and sweeps what the killed run left."""
    points = {"at-[1/5]": "[1/5]", "at-[3/5]": "[3/5]", "at-[5/5]": "[5/5]"}
    concurrently({name: (lambda n=name, w=when: kill_calibration_then_rerun(prepared, _copy(prepared, tmp_path, n), w))
                  for name, when in points.items()})


@pytest.mark.parametrize("marker", ["[3/4]"])
def test_export_force_killed_then_rerun(prepared, tmp_path, marker):
    work = _copy(prepared, tmp_path)
    before = _visible(tree_digest(work))
    args = ["export", prepared["ckpt"], "-o", work, "-c", prepared["cfg"], "--force"]
    run = Run(*args)
    run.wait_for(marker, timeout=40)
    run.proc.kill()
    run.finish()
    try:
        check_export(work)  # the old export or the new one, whole
    except TrtbuildError as e:  # or no record vouching for anything: one line that says to export again
        assert "\n" not in str(e) and "trtbuild export" in str(e), str(e)
    else:
        if _export_part(_visible(tree_digest(work))) != _export_part(before):  # the new export is in
            with pytest.raises(TrtbuildError) as e:  # and the old calibration no longer counts
                check_calibration(work)
            assert "\n" not in str(e.value)
        else:
            check_calibration(work)  # the old export, with its calibration

    again = Run(*args)
    assert again.finish() == 0, again.describe()
    assert leftovers(work) == [], again.describe()
    check_export(work)


# ---------------------------------------------------------------------------------------------
# One run at a time per work directory

def _one_wins(first, second):
    rcs = (first.finish(), second.finish())
    assert sorted(rcs) == [0, 1], first.describe() + "\n" + second.describe()
    loser = second if rcs[1] == 1 else first
    winner = first if loser is second else second
    errors = [line for line in loser.err if line.startswith("Error")]
    assert len(errors) == 1 and loser.err[-1] == errors[0], loser.describe()
    assert "in use by another trtbuild run" in errors[0] and "pid {}".format(winner.pid) in errors[0], loser.describe()
    assert "Traceback" not in loser.stderr + winner.stderr


def test_two_calibrations_at_once(prepared, tmp_path):
    work = _copy(prepared, tmp_path)
    first = Run(*calibrate_args(work, prepared, "medium"))
    assert first.wait_for("[1/5]"), first.describe()  # printed with the lock held
    second = Run(*calibrate_args(work, prepared, "small"))
    _one_wins(first, second)
    assert leftovers(work) == []
    check_calibration(work)


def test_two_exports_at_once(prepared, tmp_path):
    work = _copy(prepared, tmp_path)
    args = ["export", prepared["ckpt"], "-o", work, "-c", prepared["cfg"], "--force"]
    first = Run(*args)
    assert first.wait_for("[1/4]"), first.describe()  # printed with the lock held
    second = Run(*args)
    _one_wins(first, second)
    assert leftovers(work) == []
    check_export(work)
