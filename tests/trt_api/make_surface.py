"""Record the Python API surface of real TensorRT bindings wheels, for the strict fakes of tests/trt_api.

    python tests/trt_api/make_surface.py 8.6.1 10.13.3.9 11.4.0.106      (needs pip, gcc and g++; not run by CI)

For each version: `pip download` the bindings wheel (tensorrt-bindings for 8.x, tensorrt-cu12-bindings for 10.x,
tensorrt-cu13-bindings for 11.x: about 1 MB each, on PyPI), link its pybind module against stand-in libnvinfer /
libnvonnxparser / libnvinfer_plugin / libnvparsers (the ten C entry points it imports return NULL: enough to
import and introspect, nothing runs), and write tests/trt_api/trt-<major.minor.patch>.json.gz: every class with
its bases, enum members, constructors, methods (each overload's parameters and return type, from pybind's
signatures) and properties (type, writable or not), and the module's functions and values.
"""

import gzip
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
STUB_C = r"""
#include <stddef.h>
void* createInferBuilder_INTERNAL(void* a, int b){return NULL;}
void* createInferRefitter_INTERNAL(void* a, void* b, int c){return NULL;}
void* createInferRuntime_INTERNAL(void* a, int b){return NULL;}
void* createNvOnnxParser_INTERNAL(void* a, void* b, int c){return NULL;}
void* createNvOnnxParserRefitter_INTERNAL(void* a, void* b, int c){return NULL;}
void* getBuilderPluginRegistry(int a){return NULL;}
int getNvOnnxParserVersion(void){return 0;}
void* getPluginRegistry(void){return NULL;}
int initLibNvInferPlugins(void* a, const char* b){return 1;}
"""
STUB_CPP = r"""
namespace nvuffparser { enum class FieldType : int {}; void* createUffParser(){return nullptr;}
  class FieldMap { public: FieldMap(const char*, const void*, FieldType, int); };
  FieldMap::FieldMap(const char*, const void*, FieldType, int){} }
namespace nvcaffeparser1 { void* createCaffeParser(){return nullptr;} void shutdownProtobufLibrary(){} }
"""
SIGNATURE = re.compile(r"^(?:\d+\. )?(\w+)\((.*)\)(?: -> (.+))?$")


def _package(version):
    major = int(version.split(".")[0])
    return "tensorrt-bindings" if major < 10 else "tensorrt-cu12-bindings" if major == 10 else "tensorrt-cu13-bindings"


def _split_params(text):
    """'self: X, a: List[int], b: int = 2' -> [(name, type, has_default)], brackets respected."""
    out, depth, cur = [], 0, ""
    for ch in text + ",":
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            cur = cur.strip()
            if cur:
                name, _, rest = cur.partition(":")
                typ, eq, _ = rest.partition("=")
                out.append([name.strip(), _short(typ.strip()), bool(eq)])
            cur = ""
        else:
            cur += ch
    return out


def _short(t):
    return (t.replace("tensorrt.", "").replace("collections.abc.", "").replace("typing.", "")
            .replace("numpy.", "np.").strip())


def signatures(obj, name):
    found = []
    for line in (getattr(obj, "__doc__", None) or "").splitlines():
        m = SIGNATURE.match(line.strip())
        if m and m.group(1) == name:
            found.append({"params": _split_params(m.group(2)), "ret": _short(m.group(3) or "None")})
    return found


def introspect():
    """(In the child, with the bindings importable.) The surface as a dict."""
    import enum
    import inspect

    import tensorrt as trt

    def is_enum(cls):
        return hasattr(cls, "__members__") and isinstance(getattr(cls, "__members__"), dict)

    surface = {"classes": {}, "functions": {}, "values": {}}
    for name in sorted(dir(trt)):
        if name.startswith("_"):
            continue
        obj = getattr(trt, name)
        if inspect.isclass(obj):
            if obj.__module__ not in ("tensorrt", "tensorrt.tensorrt") and not obj.__module__.startswith("tensorrt"):
                continue
            entry = {"bases": [b.__name__ for b in obj.__mro__[1:] if b.__name__ not in ("object", "pybind11_object")]}
            if is_enum(obj):
                entry["enum"] = {k: int(v) for k, v in sorted(obj.__members__.items())}
            methods, props, static = {}, {}, {}
            for attr, raw in obj.__dict__.items():
                if attr.startswith("__") and attr != "__init__":
                    continue
                if isinstance(raw, property):
                    sig = signatures(raw.fget, "") or []
                    doc = (raw.fget.__doc__ or "") if raw.fget else ""
                    m = re.search(r"\) -> (.+)$", doc.splitlines()[0]) if doc else None
                    props[attr] = {"type": _short(m.group(1)) if m else "?", "writable": raw.fset is not None}
                elif isinstance(raw, staticmethod) or type(raw).__name__ == "builtin_function_or_method":
                    static[attr] = signatures(getattr(obj, attr), attr)
                elif callable(raw):
                    methods[attr] = signatures(raw, attr)
                elif is_enum(obj) and attr in obj.__members__:
                    continue
                else:  # e.g. Logger.ERROR: a member of a nested enum, readable on the class
                    props[attr] = {"type": type(raw).__name__, "writable": False, "class_attr": True}
                    if hasattr(raw, "name") and hasattr(raw, "__int__"):
                        props[attr]["value"] = int(raw)
            entry.update(methods=methods, properties=props, static=static)
            surface["classes"][name] = entry
        elif callable(obj):
            surface["functions"][name] = signatures(obj, name)
        else:
            surface["values"][name] = {"type": type(obj).__name__, "member": getattr(obj, "name", repr(obj))}
    return surface


def main(versions):
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "stub.c"), "w") as f:
            f.write(STUB_C)
        with open(os.path.join(tmp, "stub.cpp"), "w") as f:
            f.write(STUB_CPP)
        for version in versions:
            major = version.split(".")[0]
            libs = os.path.join(tmp, "lib" + major)
            os.makedirs(libs, exist_ok=True)
            for lib in ("libnvinfer", "libnvonnxparser", "libnvinfer_plugin"):
                subprocess.check_call(["gcc", "-shared", "-fPIC", "-o", os.path.join(libs, "{}.so.{}".format(lib, major)),
                                       os.path.join(tmp, "stub.c")])
            subprocess.check_call(["g++", "-shared", "-fPIC", "-o", os.path.join(libs, "libnvparsers.so." + major),
                                   os.path.join(tmp, "stub.cpp")])
            wheels = os.path.join(tmp, "whl-" + version)
            subprocess.check_call([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                                   "{}=={}".format(_package(version), version), "-d", wheels])
            wheel = os.path.join(wheels, os.listdir(wheels)[0])
            unpacked = os.path.join(tmp, "x-" + version)
            subprocess.check_call([sys.executable, "-m", "zipfile", "-e", wheel, unpacked])
            env = dict(os.environ, LD_LIBRARY_PATH=libs, PYTHONPATH=os.path.join(unpacked, "tensorrt_bindings"))
            out = subprocess.check_output([sys.executable, __file__, "--introspect"], env=env)
            surface = json.loads(out)
            surface["version"] = version
            short = ".".join(version.split(".")[:3])
            path = os.path.join(HERE, "trt-{}.json.gz".format(short))
            with gzip.open(path, "wt", encoding="utf-8") as f:
                json.dump(surface, f, sort_keys=True, separators=(",", ":"))
            print("{}: {} classes, {} functions -> {} ({:,} bytes)".format(
                version, len(surface["classes"]), len(surface["functions"]), path, os.path.getsize(path)))


if __name__ == "__main__":
    if sys.argv[1:] == ["--introspect"]:
        print(json.dumps(introspect()))
    else:
        main(sys.argv[1:] or ["8.6.1", "10.13.3.9", "11.4.0.106"])
