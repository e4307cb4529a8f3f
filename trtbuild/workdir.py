"""The work directory: every artifact's name, hashing, the export record, the tokenizer, and atomic writes.

One work directory per model holds the files that are the contract between the commands (and between the
CPU and the GPU machine); `WorkDir` names each of them, so no other module spells a file name.

Nothing trtbuild writes is ever visible half-written: files go to a temporary name in the same
directory and are renamed into place; directories are staged beside their final name and swapped in.
"""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile

from trtbuild.errors import CheckpointError

# Work-directory layout (the contract between commands; see DESIGN.md).
ONNX_NAME = "model.onnx"
TOKENIZER_DIR = "tokenizer"
LABELS_NAME = "labels.json"
EXPORT_JSON = "export.json"
QDQ_NAME = "model.qdq.onnx"
SCALES_NAME = "scales.json"
CACHE_NAME = "calibration.cache"
COVERAGE_JSON = "coverage.json"
COVERAGE_HTML = "coverage.html"
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
    def scales(self):
        return self.path(SCALES_NAME)

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

    def load_tokenizer(self):
        """The exported tokenizer (transformers, offline)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.tokenizer, local_files_only=True)


def check_export(workdir):
    """The export record of a work directory; a one-line error unless it holds a finished trtbuild export
    whose model.onnx still matches the record."""
    wd = WorkDir(workdir)
    if not os.path.isfile(wd.export_json) or not os.path.isfile(wd.onnx):
        raise CheckpointError("{} holds no trtbuild export (model.onnx + export.json); run `trtbuild export "
                              "CHECKPOINT -o {}` first".format(wd.root, wd.root))
    record = read_json(wd.export_json)
    if record.get("sha256", {}).get("onnx") != sha256_file(wd.onnx):
        raise CheckpointError("{}: model.onnx does not match export.json (edited or replaced?); re-run "
                              "`trtbuild export --force`".format(wd.root))
    return record


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
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


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
