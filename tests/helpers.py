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
