"""The work directory: every artifact's name, hashing, the records, the lock, and atomic writes.

One work directory per model holds the files that are the contract between the commands (and between the
CPU and the GPU machine); `WorkDir` names each of them, so no other module spells a file name.

What is guaranteed, and how:
- Nothing is visible half-written: files go to a temporary name in the same directory and are renamed
  into place; directories are staged beside their final name and swapped in.
- A step's outputs are one unit (`StagedOutputs`): written into a staging directory, then the old
  record is removed, the outputs are renamed in, and the record (export.json, calibrate.json) is written
  last, naming the sha256 of every output and input. Readers trust only what a record names
  (`check_export`, `check_calibration`): a kill between the renames leaves no record that vouches for
  a mix of old and new files.
- One run at a time per work directory (`locked`: flock on the directory itself); a second run fails
  with the holder's PID. With the lock held, temp files of interrupted runs are swept.
- JSON is standard JSON: NaN and infinities are written as null (`dumps_json`).
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile

from trtbuild.errors import CheckpointError, TrtbuildError

# Work-directory layout (the contract between commands; see DESIGN.md).
ONNX_NAME = "model.onnx"
TOKENIZER_DIR = "tokenizer"
LABELS_NAME = "labels.json"
EXPORT_JSON = "export.json"
QDQ_NAME = "model.qdq.onnx"
FP8_NAME = "model.fp8.onnx"  # calibrate --precision fp8: the same scales as FP8 (E4M3) Q/DQ, opset 19
SCALES_NAME = "scales.json"
CALIBRATE_JSON = "calibrate.json"  # the record of calibrate's outputs, written last
SCALES_FORMAT = "trtbuild-scales/2"  # /2: equalization factors (issue 20)
LOCK_INFO = ".trtbuild.lock"  # who holds the lock (pid, command), while it is held
CACHE_NAME = "calibration.cache"
COVERAGE_JSON = "coverage.json"
COVERAGE_HTML = "coverage.html"
SENSITIVITY_JSON = "sensitivity.json"
SENSITIVITY_HTML = "sensitivity.html"
REPORTS_DIR = "reports"
CACHE_DIR = "cache"
ENGINES_DIR = "engines"


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


class WorkDir:
    """Paths of one model's work directory."""

    def __init__(self, root):
        self.root = os.fspath(root)

    def __repr__(self):
        return "WorkDir({!r})".format(self.root)

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    @property
    def onnx(self):
        return self.path(ONNX_NAME)

    @property
    def tokenizer(self):
        return self.path(TOKENIZER_DIR)

    @property
    def labels(self):
        return self.path(LABELS_NAME)

    @property
    def export_json(self):
        return self.path(EXPORT_JSON)

    @property
    def qdq_onnx(self):
        return self.path(QDQ_NAME)

    @property
    def fp8_onnx(self):
        return self.path(FP8_NAME)

    @property
    def scales(self):
        return self.path(SCALES_NAME)

    @property
    def calibrate_json(self):
        return self.path(CALIBRATE_JSON)

    @property
    def calibration_cache(self):
        return self.path(CACHE_NAME)

    @property
    def coverage_json(self):
        return self.path(COVERAGE_JSON)

    @property
    def coverage_html(self):
        return self.path(COVERAGE_HTML)

    @property
    def reports(self):
        return self.path(REPORTS_DIR)

    @property
    def cache(self):
        return self.path(CACHE_DIR)

    @property
    def engines(self):
        return self.path(ENGINES_DIR)

    def engine_dir(self, compute_capability, trt_version):
        """engines/sm<major><minor>-trt<version>/: the engines of one GPU architecture and TensorRT."""
        return self.path(ENGINES_DIR, "sm{}-trt{}".format(str(compute_capability).replace(".", ""), trt_version))

    def export_outputs(self):
        return [self.onnx, self.tokenizer, self.labels, self.export_json]

    def derived_outputs(self):
        """Everything made from an export: what `export --force` removes once the new export is in place."""
        return [self.qdq_onnx, self.fp8_onnx, self.scales, self.calibrate_json, self.calibration_cache, self.coverage_json,
                self.coverage_html, self.reports, self.cache, self.engines]

    def load_tokenizer(self):
        """The exported tokenizer (transformers, offline)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.tokenizer, local_files_only=True)


def check_report_dir(path):
    """--reports DIR must be a directory (or not exist yet): refuse a file there before any work is done."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise TrtbuildError("--reports {} is a file; pass a directory (it is created if needed)".format(path))
    return path


def read_record(path, rerun, required=()):
    """A JSON object trtbuild wrote (export.json, calibrate.json, scales.json, manifest.json): a one-line error
    that says what to re-run when it is missing, unreadable, not an object, or lacks a `required` key."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise TrtbuildError("{} not found; run `{}`".format(path, rerun))
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise TrtbuildError("{} is not valid JSON (truncated or edited? {}); re-run `{}`".format(
            path, str(e).splitlines()[0][:80], rerun)) from None
    if not isinstance(data, dict):
        raise TrtbuildError("{} is not a JSON object ({} holds a {}); re-run `{}`".format(
            path, name, type(data).__name__, rerun))
    missing = [k for k in required if k not in data]
    if missing:
        raise TrtbuildError("{} lacks {} (written by another version, or edited); re-run `{}`".format(
            path, ", ".join(missing), rerun))
    return data


def check_export(workdir):
    """The export record of a work directory; a one-line error unless it holds a finished trtbuild export
    whose model.onnx and tokenizer/ still match the record."""
    wd = WorkDir(workdir)
    rerun = "trtbuild export CHECKPOINT -o {} --force".format(wd.root)
    if not os.path.isfile(wd.export_json) or not os.path.isfile(wd.onnx):
        raise CheckpointError("{} holds no trtbuild export (model.onnx + export.json); run `trtbuild export "
                              "CHECKPOINT -o {}` first".format(wd.root, wd.root))
    record = read_record(wd.export_json, rerun, ("sha256", "inputs", "labels", "max_length", "vocab_size"))
    sha = record["sha256"] if isinstance(record["sha256"], dict) else {}
    if not isinstance(record["inputs"], list) or not isinstance(record["labels"], list) or \
            not isinstance(record["max_length"], int) or not isinstance(record["vocab_size"], int):
        raise CheckpointError("{}: export.json is malformed (inputs, labels, max_length or vocab_size); re-run "
                              "`{}`".format(wd.root, rerun))
    if sha.get("onnx") != sha256_file(wd.onnx):
        raise CheckpointError("{}: model.onnx does not match export.json (edited or replaced?); re-run "
                              "`{}`".format(wd.root, rerun))
    if not os.path.isdir(wd.tokenizer):
        raise CheckpointError("{}: tokenizer/ is missing; re-run `{}`".format(wd.root, rerun))
    if sha.get("tokenizer") != sha256_tree(wd.tokenizer):
        raise CheckpointError("{}: tokenizer/ does not match export.json (swapped or edited?); re-run `{}`".format(
            wd.root, rerun))
    return record


AMAX_LIMIT = 65504.0  # the largest FP16 value: an engine runs the float parts in FP16, a larger range cannot be real


def check_amax(name, amax, source):
    """An activation's amax must be a finite number in (0, 65504]; a one-line error naming it otherwise."""
    ok = isinstance(amax, (int, float)) and not isinstance(amax, bool) and math.isfinite(amax) and 0 < amax <= AMAX_LIMIT
    if not ok:
        raise TrtbuildError("{}: the amax of {} is {!r}; an amax must be a finite number in (0, {:g}] (the FP16 "
                            "range): re-run `trtbuild calibrate` (an all-zero tensor: keep its consumer in float with "
                            "--exclude)".format(source, name, amax, AMAX_LIMIT))
    return float(amax)


def read_scales(wd, record):
    """scales.json of a work directory, checked: our format, made for this export's model.onnx, every amax valid."""
    rerun = "trtbuild calibrate {}".format(wd.root)
    scales = read_record(wd.scales, rerun, ("format", "onnx_sha256", "activations", "placement"))
    if scales["format"] != SCALES_FORMAT:
        raise TrtbuildError("{}: unknown format {!r} (expected {}); run `{}`".format(
            wd.scales, scales["format"], SCALES_FORMAT, rerun))
    if scales["onnx_sha256"] != record["sha256"]["onnx"]:
        raise TrtbuildError("{} was computed for another model.onnx; run `{}`".format(wd.scales, rerun))
    acts, placement = scales["activations"], scales["placement"]
    if not isinstance(acts, dict) or not isinstance(placement, dict):
        raise TrtbuildError("{}: activations or placement malformed; run `{}`".format(wd.scales, rerun))
    for name, a in acts.items():
        if not isinstance(a, dict) or "amax" not in a:
            raise TrtbuildError("{}: activation {} has no amax; run `{}`".format(wd.scales, name, rerun))
        check_amax(name, a["amax"], wd.scales)
    return scales


def check_calibration(workdir, record=None, fp8=False):
    """calibrate.json of a work directory, once it is sure that model.qdq.onnx and scales.json are the ones it
    names and were made from the current export; a one-line error otherwise."""
    wd = WorkDir(workdir)
    record = record or check_export(wd.root)
    rerun = "trtbuild calibrate {}".format(wd.root)
    if not os.path.isfile(wd.calibrate_json):
        what = "model.qdq.onnx and scales.json" if os.path.exists(wd.qdq_onnx) else "no calibration"
        raise TrtbuildError("{} holds {} without a calibrate.json record (an interrupted or older calibrate); "
                            "run `{}`".format(wd.root, what, rerun))
    cal = read_record(wd.calibrate_json, rerun, ("inputs", "outputs"))
    inputs, outputs = cal["inputs"], cal["outputs"]
    if not isinstance(inputs, dict) or not isinstance(outputs, dict):
        raise TrtbuildError("{} is malformed; run `{}`".format(wd.calibrate_json, rerun))
    if inputs.get("onnx") != record["sha256"]["onnx"]:
        raise TrtbuildError("{}: the calibration was made for another model.onnx (exported again since?); run "
                            "`{}`".format(wd.root, rerun))
    for name in (QDQ_NAME, SCALES_NAME) + ((FP8_NAME,) if fp8 else ()):
        path = wd.path(name)
        if not os.path.isfile(path) or outputs.get(name) != sha256_file(path):
            raise TrtbuildError("{}: {} is not the one calibrate.json names (edited, replaced or half-written); "
                                "run `{}`".format(wd.root, name, rerun))
    return cal


def sha256_file(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_tree(path):
    """sha256 of a file, or of a directory: its files' relative paths and contents, in sorted order."""
    if not os.path.isdir(path):
        return sha256_file(path)
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            full = os.path.join(root, f)
            h.update(os.path.relpath(full, path).replace(os.sep, "/").encode("utf-8") + b"\0")
            h.update(sha256_file(full).encode("ascii") + b"\n")
    return h.hexdigest()


def json_safe(obj):
    """`obj` with NaN and infinities as None and numpy scalars and arrays as Python values: standard JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist") and type(obj).__module__ == "numpy":
        return json_safe(obj.tolist())
    return obj


def dumps_json(obj, indent=2):
    """Standard JSON (no NaN / Infinity literals), UTF-8 kept as is."""
    return json.dumps(json_safe(obj), indent=indent, ensure_ascii=False, allow_nan=False)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success rename it onto `path`, else remove it.

    For writers that want a file name (torch.onnx.export, onnx.save).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_bytes(path, data):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj):
    atomic_write_text(path, dumps_json(obj) + "\n")


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a staging directory beside `path`; on success it replaces `path` as a whole."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if os.path.isdir(path):
            old = tmp + ".old"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def remove(path):
    """Remove a file or a directory tree; nothing when it is not there."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


# ---------------------------------------------------------------------------------------------
# A step's outputs as one unit

class StagedOutputs(object):
    """Outputs of one step, written under `path(name)` in a staging directory inside the work directory, then
    `commit()`ed: the old record goes, each output is renamed onto its name, stale outputs of earlier runs
    (`clear`) are removed, and the record is written last with the sha256 of every output. Leaving the
    `with` block without a commit removes the staging directory: nothing of the run stays behind."""

    def __init__(self, workdir, step):
        self.wd = WorkDir(workdir)
        self.step = step
        self.dir = None

    def __enter__(self):
        os.makedirs(self.wd.root, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix=".staging-{}.".format(self.step), suffix=".tmp", dir=self.wd.root)
        return self

    def __exit__(self, *exc):
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def path(self, name):
        return os.path.join(self.dir, name)

    def commit(self, record_path, record, clear=()):
        """Rename every staged output into the work directory and write `record` (a dict; its "outputs" get the
        sha256 of each) to `record_path`, last. Returns the record as written."""
        names = sorted(os.listdir(self.dir))
        record = dict(record)
        outputs = dict(record.get("outputs") or {})
        outputs.update({name: sha256_tree(self.path(name)) for name in names})
        record["outputs"] = outputs
        remove(record_path)  # from here on no record vouches for the old outputs
        for name in names:
            target = self.wd.path(name)
            if os.path.isdir(target) and not os.path.islink(target):
                old = self.path(".old-" + name)
                os.replace(target, old)
                os.replace(self.path(name), target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(self.path(name), target)
        for name in clear:
            if name not in names:
                remove(self.wd.path(name))
        atomic_write_json(record_path, record)
        return record


# ---------------------------------------------------------------------------------------------
# One run at a time per work directory

_HELD = {}  # real path -> [fd, depth]: the lock is re-entrant within one process


def _holder(root):
    try:
        with open(os.path.join(root, LOCK_INFO), encoding="utf-8") as f:
            return f.read().strip() or "unknown"
    except OSError:
        return "unknown"


def sweep_stale(root):
    """Remove what interrupted runs left: hidden temp files and staging directories (`.*.tmp`, `.*.tmp.old`).
    Only call with the work directory's lock held (then no live run is writing them). Returns how many."""
    swept = 0
    for base, dirs, files in os.walk(root):
        for name in list(dirs):
            if name.startswith(".") and (name.endswith(".tmp") or name.endswith(".tmp.old")):
                shutil.rmtree(os.path.join(base, name), ignore_errors=True)
                dirs.remove(name)
                swept += 1
        for name in files:
            if name.startswith(".") and (name.endswith(".tmp") or name.endswith(".tmp.old")):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(base, name))
                    swept += 1
    return swept


@contextlib.contextmanager
def locked(workdir, create=True):
    """Hold the work directory's lock (flock on the directory itself) for a run that writes into it; a second
    run fails at once with a one-line error naming the holder. Sweeps stale temp files once it holds it."""
    root = WorkDir(workdir).root
    if create:
        os.makedirs(root, exist_ok=True)
    elif not os.path.isdir(root):
        raise CheckpointError("{} holds no trtbuild export ({}); run `trtbuild export CHECKPOINT -o {}` first".format(
            root, "it is a file, not a work directory" if os.path.exists(root) else "it does not exist", root))
    real = os.path.realpath(root)
    if real in _HELD:
        _HELD[real][1] += 1
        try:
            yield 0
        finally:
            _HELD[real][1] -= 1
        return
    fd = os.open(real, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise TrtbuildError("{} is in use by another trtbuild run ({}); wait for it to finish, or use another "
                                "work directory".format(root, _holder(real))) from None
        raise
    _HELD[real] = [fd, 1]
    info = os.path.join(real, LOCK_INFO)
    try:
        with contextlib.suppress(OSError):
            with open(info, "w", encoding="utf-8") as f:
                f.write("pid {}: {}".format(os.getpid(), " ".join(os.path.basename(a) if i == 0 else a
                                                                  for i, a in enumerate(sys.argv))[:200]))
        yield sweep_stale(real)
    finally:
        with contextlib.suppress(OSError):
            os.remove(info)
        del _HELD[real]
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
