"""TensorRT work in a child process that the parent watches.

TensorRT 8.6 can crash the whole process inside native code (on the H200 every multi-profile Myelin engine
segfaulted as soon as a second profile was used: NVIDIA/TensorRT#2977, docs/results/issue17-profiles-*.json).
A crash there must never look like a result, so the parts of build, verify and bench that run an engine run
here: `call(func, *args)` pickles the call to `python -m trtbuild.backends.trt.isolated IN OUT` (the same
interpreter and environment), which runs it and pickles the result back. A TrtbuildError raised in the child
is raised again in the parent with its message and exit code; a child killed by a signal becomes one line:

    Error: TensorRT crashed (SIGSEGV) while running out/m/engines/sm90-trt8.6.0/fp16.engine; ...
"""

import importlib
import os
import pickle
import signal
import subprocess
import sys
import tempfile

from trtbuild.errors import TrtbuildError

TIMEOUT_S = 3600


class EngineCrashError(TrtbuildError):
    """The child process running TensorRT died (a native crash) or ran past its time."""


def _name(func):
    return func.__module__, func.__qualname__


def call(func, *args, what="running TensorRT", timeout=TIMEOUT_S, **kwargs):
    """`func(*args, **kwargs)` in a child process; its return value, or its TrtbuildError, here."""
    module, qualname = _name(func)
    with tempfile.TemporaryDirectory(prefix="trtbuild-isolated-") as tmp:
        spec, out = os.path.join(tmp, "in.pkl"), os.path.join(tmp, "out.pkl")
        with open(spec, "wb") as f:
            pickle.dump((module, qualname, args, kwargs), f)
        returncode = _run_streaming([sys.executable, "-m", __name__, spec, out], timeout, what)
        if returncode != 0 or not os.path.isfile(out):
            sig = -returncode if returncode < 0 else None
            name = signal.Signals(sig).name if sig else "exit {}".format(returncode)
            raise EngineCrashError("TensorRT crashed ({}) while {}; nothing from that run was used. With several "
                                   "optimization profiles this is TensorRT 8.6's Myelin bug (NVIDIA/TensorRT#2977): "
                                   "rebuild the engine with trtbuild build, which tests every profile".format(
                                       name, what))
        with open(out, "rb") as f:
            ok, value = pickle.load(f)
    if not ok:
        message, exit_code = value
        error = TrtbuildError(message)
        error.exit_code = exit_code
        raise error
    return value


def _run_streaming(cmd, timeout, what):
    """Run the child, its output (TensorRT's log, progress) passed on to our stderr line by line; its exit code."""
    import threading

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                            errors="replace")
    expired = []

    def kill():
        expired.append(True)
        proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        for line in proc.stdout:
            sys.stderr.write(line)
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:  # interrupted here (Ctrl-C, SIGTERM): the child goes too
            proc.kill()
            proc.wait()
    if expired:
        raise EngineCrashError("TensorRT ran past {} s while {}; the engine hangs: rebuild it (trtbuild build "
                               "WORKDIR)".format(timeout, what))
    return proc.returncode


def main(argv=None):
    spec, out = (argv or sys.argv[1:])[:2]
    with open(spec, "rb") as f:
        module, qualname, args, kwargs = pickle.load(f)
    func = importlib.import_module(module)
    for part in qualname.split("."):
        func = getattr(func, part)
    try:
        result = (True, func(*args, **kwargs))
    except TrtbuildError as e:
        result = (False, (str(e), e.exit_code))
    with open(out, "wb") as f:
        pickle.dump(result, f)


if __name__ == "__main__":
    main()
