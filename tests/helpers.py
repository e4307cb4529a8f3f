"""Paths and helpers the tests share (fixtures live in conftest.py)."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository
DATA = os.path.join(ROOT, "calibration_data")


def listing(path):
    """All files under path, relative, sorted (temp files included: they must not be left behind)."""
    out = []
    for root, dirs, files in os.walk(path):
        rel = os.path.relpath(root, path)
        for f in files:
            out.append(os.path.normpath(os.path.join(rel, f)))
        for d in dirs:
            out.append(os.path.normpath(os.path.join(rel, d)) + "/")
    return sorted(out)


def tree_digest(path):
    """{relative path: sha256} of every file under path (for byte-identical before/after checks)."""
    import hashlib

    out = {}
    for root, dirs, files in os.walk(path):
        for f in files:
            full = os.path.join(root, f)
            if os.path.islink(full):
                continue
            h = hashlib.sha256()
            with open(full, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            out[os.path.relpath(full, path)] = h.hexdigest()
    return out


def leftovers(path):
    """Hidden temp files and staging directories under path (`.*.tmp`, `.*.tmp.old`, `.staging-*`), and a
    lock-info file left behind: what an interrupted or failed run must not leave."""
    found = []
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            if name.startswith(".") and (name.endswith(".tmp") or name.endswith(".tmp.old")
                                         or name.startswith(".staging-") or name == ".trtbuild.lock"):
                found.append(os.path.relpath(os.path.join(root, name), path))
    return sorted(found)
