"""The house rules of the package, read from the source: one import direction, no cycles, TensorRT in one place.

Every import is read with `ast`, the ones inside functions included (a lazy import is still a dependency).
Layers, highest first; a module may import only from its own layer's module or from layers below:

    cli > demo > calibrate.fallback > {export, calibrate, verify, bench} > backends > core

The four steps are peers that never import one another (calibrate.fallback is the one module that uses
both calibrate and verify). Inside a layer, a package's modules may import each other without a cycle.
"""

import ast
import os

from helpers import ROOT

PACKAGE = os.path.join(ROOT, "trtbuild")
CORE = {"trtbuild", "trtbuild._util", "trtbuild.config", "trtbuild.errors", "trtbuild.workdir", "trtbuild.data",
        "trtbuild.html"}
STEPS = ("trtbuild.export", "trtbuild.calibrate", "trtbuild.verify", "trtbuild.bench")
HEAVY_TRT = ("tensorrt", "polygraphy")


def _module_name(path):
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def _modules():
    out = {}
    for root, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(root, f)
                out[_module_name(path)] = path
    return out


MODULES = _modules()


def _imports(path, name):
    """Every module `name` imports (absolute names; relative imports resolved), function-level ones included."""
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            for a in node.names:  # `from trtbuild.backends import ort` imports the module trtbuild.backends.ort
                if "{}.{}".format(base, a.name) in MODULES:
                    found.add("{}.{}".format(base, a.name))
    return found


GRAPH = {name: {m for m in _imports(path, name) if m in MODULES and m != name} for name, path in MODULES.items()}


def layer(name):
    """0 core, 1 backends, 2 the steps, 3 calibrate.fallback, 4 demo, 5 cli."""
    if name in CORE:
        return 0
    if name == "trtbuild.backends" or name.startswith("trtbuild.backends."):
        return 1
    if name == "trtbuild.calibrate.fallback":
        return 3
    if any(name == s or name.startswith(s + ".") for s in STEPS):
        return 2
    if name == "trtbuild.demo" or name.startswith("trtbuild.demo."):
        return 4
    if name in ("trtbuild.cli", "trtbuild.__main__"):
        return 5
    raise AssertionError("module {} has no layer: add it to tests/test_layering.py".format(name))


def step(name):
    return next((s for s in STEPS if name == s or name.startswith(s + ".")), None)


def test_every_module_has_a_layer():
    for name in MODULES:
        layer(name)


def test_imports_point_down():
    wrong = []
    for name, deps in sorted(GRAPH.items()):
        for dep in sorted(deps):
            if layer(dep) > layer(name):
                wrong.append("{} (layer {}) imports {} (layer {})".format(name, layer(name), dep, layer(dep)))
            elif layer(dep) == layer(name) == 2 and step(dep) != step(name):
                wrong.append("{} imports {}: the steps never import one another".format(name, dep))
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(GRAPH[node]):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_tensorrt_and_polygraphy_only_in_backends_trt():
    offenders = []
    for name, path in sorted(MODULES.items()):
        if name.startswith("trtbuild.backends.trt"):
            continue
        for dep in _imports(path, name):
            if dep.split(".")[0] in HEAVY_TRT:
                offenders.append("{} imports {}".format(name, dep))
    assert not offenders, "\n".join(offenders)


LAZY = ("torch", "transformers", "onnx", "onnxruntime", "tensorrt", "polygraphy", "datasets", "matplotlib", "tqdm",
        "safetensors", "tokenizers")


def test_heavy_packages_are_imported_inside_functions_only():
    """numpy and the standard library at module top; torch & co. only where a command needs them."""
    offenders = []
    for name, path in sorted(MODULES.items()):
        tree = ast.parse(open(path, encoding="utf-8").read())
        for node in tree.body:  # module level only (a try/except ImportError at the top counts too)
            stmts = [node] + (list(node.body) if isinstance(node, ast.Try) else [])
            for stmt in stmts:
                names = []
                if isinstance(stmt, ast.Import):
                    names = [a.name for a in stmt.names]
                elif isinstance(stmt, ast.ImportFrom) and not stmt.level:
                    names = [stmt.module or ""]
                offenders += ["{}: {}".format(name, n) for n in names if n.split(".")[0] in LAZY]
    assert not offenders, "\n".join(offenders)
