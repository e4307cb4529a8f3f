"""Small helpers every step shares: progress callbacks and bars, error text, the result shape, and the click
classes that turn a TrtbuildError into one line (for `trtbuild` and for the `python -m` entry points alike)."""

import signal
import sys

import click

from trtbuild.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, EXIT_USER, Terminated, TrtbuildError, \
    os_error_message


def noop(msg):
    """The default `progress` callback: says nothing."""


def first_line(exc):
    """The first line of an exception's message, or its type name when it has none."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def progress_bar(total, desc, unit="text"):
    """A tqdm bar on stderr, or None where tqdm is missing (the GPU side's Python: a bar is a nicety)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


class Result(object):
    """What every command's library call returns: `to_dict()` (the JSON the command prints with --json),
    `summary()` (the text it prints otherwise), `exit_code`, and `write(directory)` for results that are
    saved as reports. Subclasses define `to_dict` and `summary`."""

    exit_code = EXIT_OK
    paths = None

    def to_dict(self):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def summary(self):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def write(self, directory):
        """Save the result's report files under `directory`; results that are not reports have none."""
        return {}


# ---------------------------------------------------------------------------------------------
# click: a TrtbuildError is one line `Error: ...` and its exit code; Ctrl-C is exit 130

class _UserError(click.ClickException):
    def __init__(self, error):
        super().__init__(str(error))
        self.exit_code = error.exit_code


_SIGNALLED = []  # the signal that interrupted this run: it decides the exit, whatever the interrupted code raised


def _interrupt(signum, frame):
    _SIGNALLED.append(signum)
    raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def _invoke_guarded(invoke, ctx):
    """Run a command: a TrtbuildError or a file-system error is one line `Error: ...`; Ctrl-C is exit 130 and
    SIGTERM exit 143, both after every temp file of the run is removed (a signal that lands inside an import or
    a C extension can surface as another exception: the signal still decides)."""
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    del _SIGNALLED[:]
    try:
        return invoke(ctx)
    except (click.exceptions.Exit, click.ClickException, SystemExit):
        raise
    except BaseException as e:
        if _SIGNALLED or isinstance(e, (KeyboardInterrupt, Terminated)):
            interrupted = (_SIGNALLED or [signal.SIGINT if isinstance(e, KeyboardInterrupt) else signal.SIGTERM])[0]
            if interrupted == signal.SIGINT:
                click.echo("Aborted (interrupted); nothing was left half-written.", err=True)
                sys.exit(EXIT_INTERRUPTED)
            click.echo("Terminated (SIGTERM); nothing was left half-written.", err=True)
            sys.exit(EXIT_TERMINATED)
        _report(e)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _report(e):
    """A TrtbuildError, a file-system error or an out-of-memory: one line and its exit code; anything else is a bug
    and keeps its traceback."""
    try:
        raise e
    except TrtbuildError as e:
        raise _UserError(e) from None
    except (OSError, MemoryError) as e:
        message = os_error_message(e) if isinstance(e, OSError) else \
            "out of memory; lower the batch size, max_texts or the shapes, or use a machine with more memory"
        click.echo("Error: {}".format(message), err=True)
        sys.exit(EXIT_USER)


class Group(click.Group):
    def invoke(self, ctx):
        return _invoke_guarded(super().invoke, ctx)


class Command(click.Command):
    def invoke(self, ctx):
        return _invoke_guarded(super().invoke, ctx)


def say(msg):
    """Progress lines of the entry points: stdout, flushed."""
    print(msg, flush=True)
