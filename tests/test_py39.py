"""TensorRT runs under Python 3.9 on the GPU machine: the package must stay 3.9 syntax."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "trtbuild"


def test_package_parses_as_python_39():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        try:
            ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))
        except SyntaxError as e:
            bad.append("{}:{}: {}".format(path.name, e.lineno, e.msg))
    assert not bad, bad


def test_no_runtime_union_or_pep604_annotations():
    """`X | Y` in an annotation is evaluated at import on 3.9 (no `from __future__ import annotations` here)."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            ann = getattr(node, "annotation", None) or getattr(node, "returns", None)
            if ann is not None and any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) for n in ast.walk(ann)):
                bad.append("{}:{}".format(path.name, node.lineno))
    assert not bad, bad
