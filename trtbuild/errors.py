"""Typed errors and the exit codes they map to.

Exit codes (the CLI contract, also used by CI gates):
    0  ok
    1  user error: bad input, bad config, a check that failed (message says what to do)
    2  usage error (click's own)
    3  missing GPU or TensorRT
    4  accuracy gate failed (a result, not a crash)
  130  interrupted (Ctrl-C)
  143  terminated (SIGTERM)
"""

EXIT_OK = 0
EXIT_USER = 1
EXIT_USAGE = 2
EXIT_NO_GPU = 3
EXIT_GATE = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class TrtbuildError(Exception):
    """A user-facing error: the CLI prints its message as one line and exits with `exit_code`."""

    exit_code = EXIT_USER

    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def __str__(self):
        return self.message


class ConfigError(TrtbuildError):
    """A config value is wrong. `path` is the dotted key path (e.g. `build.profiles[2].max`)."""

    def __init__(self, path, reason):
        self.path = path
        self.reason = reason
        super().__init__("{}: {}".format(path, reason) if path else reason)

    def under(self, prefix):
        """The same error, with its key path placed under `prefix` (a parent key)."""
        if not prefix:
            return self
        if not self.path:
            path = prefix
        elif self.path.startswith("["):
            path = prefix + self.path
        else:
            path = prefix + "." + self.path
        return ConfigError(path, self.reason)


class CheckpointError(TrtbuildError):
    """The checkpoint directory can't be exported as it is."""


class OutputExistsError(TrtbuildError):
    """An output is already there and `--force` was not given."""


class ParityError(TrtbuildError):
    """ONNX Runtime and PyTorch disagree beyond the tolerance. Carries the per-shape numbers."""

    def __init__(self, message, checks=()):
        super().__init__(message)
        self.checks = list(checks)


class MissingDependencyError(TrtbuildError):
    """A Python package a command needs is not installed."""


class NoGpuError(TrtbuildError):
    """TensorRT or a CUDA GPU is not available."""

    exit_code = EXIT_NO_GPU


class Terminated(BaseException):
    """SIGTERM arrived: raised from the signal handler so that every `with` block cleans up (temp files go)."""


def os_error_message(e):
    """One line for an OSError of the file system, with what to do about it."""
    import errno

    where = e.filename or "a file"
    advice = {
        errno.ENOSPC: "no space left on the device; free some space (or choose another work directory) and run again",
        errno.EDQUOT: "disk quota exceeded; free some space and run again",
        errno.EROFS: "read-only file system; choose a writable work directory or --reports DIR",
        errno.EACCES: "permission denied; check the permissions (or choose another directory)",
        errno.EPERM: "operation not permitted (an immutable or protected file?); check it with lsattr, or choose "
                     "another directory",
        errno.ENAMETOOLONG: "file name too long; choose a shorter path",
        errno.ENOTDIR: "a part of this path is a file, not a directory; choose another path",
        errno.EISDIR: "this is a directory where a file belongs; choose another path",
        errno.ENOENT: "no such file or directory",
        errno.EMFILE: "too many open files; raise `ulimit -n`",
    }.get(e.errno, e.strerror or str(e))
    return "{}: {}".format(where, advice)
