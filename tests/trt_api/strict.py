"""A strict stand-in for the `tensorrt` module of one real version, generated from its recorded API surface
(tests/trt_api/trt-<version>.json.gz, made by make_surface.py from the real bindings wheel).

Unlike MagicMock it raises where the real bindings would: an attribute the version lacks (AttributeError), a
write to a read-only property or to an attribute that is not a property, a call with an unknown keyword or the
wrong number of arguments (TypeError), an argument of another recorded class or enum than the signature names
(TypeError). Nothing computes: methods return fresh fakes of their recorded return type. Every call is logged in
`fake.calls` as (class, method, args, kwargs) for the tests to read.
"""

import gzip
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
VERSIONS = ("8.6.1", "10.13.3", "11.4.0")
# return types pybind could not name in a signature (10.x / 11.x print a C++ accessor type there)
RETURN_FIXES = {("tensorrt", "get_plugin_registry"): "IPluginRegistry",
                ("tensorrt", "get_builder_plugin_registry"): "IPluginRegistry",
                ("ICudaEngine", "create_engine_inspector"): "EngineInspector"}  # (8.6 prints nvinfer1::IEngineInspector)
PRIMITIVE = {"int": 0, "float": 0.0, "bool": False, "str": "", "None": None, "SupportsInt": 0, "SupportsFloat": 0.0}


def load_surface(version):
    with gzip.open(os.path.join(HERE, "trt-{}.json.gz".format(version)), "rt", encoding="utf-8") as f:
        return json.load(f)


class StrictTrt(object):
    """`import tensorrt as trt`, for one recorded version."""

    def __init__(self, version):
        object.__setattr__(self, "_surface", load_surface(version))
        object.__setattr__(self, "__version__", version)
        object.__setattr__(self, "calls", [])
        object.__setattr__(self, "_classes", {})

    def __getattr__(self, name):
        s = self._surface
        if name in s["classes"]:
            if name not in self._classes:
                self._classes[name] = FakeClass(self, name)
            return self._classes[name]
        if name in s["functions"]:
            return FakeMethod(self, "tensorrt", name, s["functions"][name], bound=False)
        if name in s["values"]:
            v = s["values"][name]
            return getattr(getattr(self, v["type"]), v["member"])
        raise AttributeError("tensorrt {} has no attribute {!r}".format(self.__version__, name))

    def __setattr__(self, name, value):
        raise AttributeError("the tensorrt module is not writable ({})".format(name))

    # -- the surface, walked with base classes
    def lookup(self, cls, kind, attr):
        seen = [cls]
        while seen:
            c = seen.pop(0)
            entry = self._surface["classes"].get(c)
            if entry is None:
                continue
            if attr in entry.get(kind, {}):
                return entry[kind][attr]
            seen.extend(entry.get("bases", []))
        return None

    def is_a(self, cls, want):
        if cls == want:
            return True
        entry = self._surface["classes"].get(cls) or {}
        return want in entry.get("bases", [])

    def make(self, type_name):
        """A value of a recorded return / property type."""
        t = type_name.strip()
        if t in PRIMITIVE:
            return PRIMITIVE[t]
        if t.startswith(("List[", "list[", "Sequence[")):
            return []
        if t.startswith(("Tuple[", "tuple[")):
            return ()
        if t.startswith("Optional["):
            return self.make(t[len("Optional["):-1])
        if t in self._surface["classes"]:
            entry = self._surface["classes"][t]
            if "enum" in entry:
                first = sorted(entry["enum"].items(), key=lambda kv: kv[1])[0][0]
                return FakeEnum(self, t, first, entry["enum"][first])
            return FakeObject(self, t)
        return FakeObject(self, t, unknown=True)


class FakeEnum(object):
    def __init__(self, fake, cls, name, value):
        self._fake, self._cls, self.name, self.value = fake, cls, name, value

    def __int__(self):
        return self.value

    __index__ = __int__

    def __eq__(self, other):
        return isinstance(other, FakeEnum) and (other._cls, other.name) == (self._cls, self.name)

    def __hash__(self):
        return hash((self._cls, self.name))

    def __repr__(self):
        return "{}.{}".format(self._cls, self.name)


class FakeClass(object):
    """A recorded class: its constructor, enum members, static methods and class attributes."""

    def __init__(self, fake, name):
        self._fake, self._name = fake, name

    def __call__(self, *args, **kwargs):
        overloads = self._fake.lookup(self._name, "methods", "__init__")
        if overloads is not None and not any(p[0] == "*args" for o in overloads for p in o["params"]) and overloads:
            check_call(self._fake, self._name, "__init__", overloads, (None,) + args, kwargs)
        elif overloads == []:
            raise TypeError("tensorrt {}.{}: no constructor".format(self._fake.__version__, self._name))
        obj = FakeObject(self._fake, self._name)
        object.__setattr__(obj, "init_args", args)
        self._fake.calls.append((self._name, "__init__", args, kwargs))
        return obj

    def __getattr__(self, attr):
        entry = self._fake._surface["classes"][self._name]
        if attr == "__members__" and "enum" in entry:
            return {k: FakeEnum(self._fake, self._name, k, v) for k, v in entry["enum"].items()}
        if attr in entry.get("enum", {}):
            return FakeEnum(self._fake, self._name, attr, entry["enum"][attr])
        prop = self._fake.lookup(self._name, "properties", attr)
        if prop is not None and prop.get("class_attr"):
            return FakeEnum(self._fake, prop["type"], attr, prop.get("value", 0))
        static = self._fake.lookup(self._name, "static", attr)
        if static is not None:
            return FakeMethod(self._fake, self._name, attr, static, bound=False)
        if self._fake.lookup(self._name, "methods", attr) is not None:
            return FakeMethod(self._fake, self._name, attr, self._fake.lookup(self._name, "methods", attr), bound=False)
        raise AttributeError("tensorrt {}: {} has no attribute {!r}".format(self._fake.__version__, self._name, attr))

    def __repr__(self):
        return "<strict tensorrt {} class {}>".format(self._fake.__version__, self._name)


class FakeObject(object):
    """An instance of a recorded class: only its recorded methods and properties exist."""

    def __init__(self, fake, cls, unknown=False):
        object.__setattr__(self, "_fake", fake)
        object.__setattr__(self, "_cls", cls)
        object.__setattr__(self, "_values", {})

    def __getattr__(self, attr):
        fake, cls = self._fake, self._cls
        methods = fake.lookup(cls, "methods", attr)
        if methods is not None:
            return FakeMethod(fake, cls, attr, methods, bound=True, owner=self)
        prop = fake.lookup(cls, "properties", attr)
        if prop is not None:
            if attr not in self._values:
                self._values[attr] = fake.make(prop["type"])
            return self._values[attr]
        raise AttributeError("tensorrt {}: {} has no attribute {!r}".format(fake.__version__, cls, attr))

    def __setattr__(self, attr, value):
        fake, cls = self._fake, self._cls
        prop = fake.lookup(cls, "properties", attr)
        if prop is None:
            raise AttributeError("tensorrt {}: {} has no property {!r} to set".format(fake.__version__, cls, attr))
        if not prop["writable"]:
            raise AttributeError("tensorrt {}: {}.{} is read-only".format(fake.__version__, cls, attr))
        check_value(fake, "{}.{}".format(cls, attr), prop["type"], value)
        self._values[attr] = value
        fake.calls.append((cls, "=" + attr, (value,), {}))

    def __repr__(self):
        return "<strict tensorrt {} {}>".format(self._fake.__version__, self._cls)


class FakeMethod(object):
    def __init__(self, fake, cls, name, overloads, bound, owner=None):
        self._fake, self._cls, self._name, self._overloads, self._bound, self._owner = \
            fake, cls, name, overloads, bound, owner

    def __call__(self, *args, **kwargs):
        full = ((self._owner,) + args) if self._bound else args
        overloads = [o for o in self._overloads if not any(p[0] == "*args" for p in o["params"])]
        ret = check_call(self._fake, self._cls, self._name, overloads, full, kwargs, static=not self._bound) \
            if overloads else "None"
        self._fake.calls.append((self._cls, self._name, args, kwargs))
        return self._fake.make(RETURN_FIXES.get((self._cls, self._name), ret))


def check_value(fake, where, type_name, value):
    """TypeError when `value` is a recorded class / enum other than `type_name` wants."""
    t = type_name.strip()
    if isinstance(value, FakeEnum):
        if t in fake._surface["classes"] and value._cls != t and not t.endswith(value._cls):
            raise TypeError("{}: expects {}, got {!r}".format(where, t, value))
    elif isinstance(value, FakeObject):
        if t in fake._surface["classes"] and not fake.is_a(value._cls, t) and t.rstrip("_") != value._cls:
            # (pybind converts PluginFieldCollection to PluginFieldCollection_ implicitly)
            raise TypeError("{}: expects {}, got {}".format(where, t, value._cls))
    elif isinstance(value, (FakeClass, FakeMethod)):
        raise TypeError("{}: got {!r}".format(where, value))


def check_call(fake, cls, name, overloads, args, kwargs, static=False):  # args include self for methods
    """The return type of the first overload the call fits; TypeError with every signature when none does."""
    problems = []
    for o in overloads:
        params = o["params"]
        if len(args) > len(params):
            problems.append("too many arguments")
            continue
        names = [p[0] for p in params]
        unknown = [k for k in kwargs if k not in names[len(args):]]
        if unknown:
            problems.append("unknown keyword(s) {}".format(", ".join(unknown)))
            continue
        given = set(names[:len(args)]) | set(kwargs)
        missing = [p[0] for p in params if not p[2] and p[0] not in given]
        if missing:
            problems.append("missing {}".format(", ".join(missing)))
            continue
        try:
            for (pname, ptype, _), value in list(zip(params, args))[1 if params and params[0][0] == "self" else 0:]:
                check_value(fake, "{}.{}({})".format(cls, name, pname), ptype, value)
            for k, value in kwargs.items():
                check_value(fake, "{}.{}({})".format(cls, name, k), params[names.index(k)][1], value)
        except TypeError as e:
            problems.append(str(e))
            continue
        return o["ret"]
    raise TypeError("tensorrt {}: {}.{}{} fits no signature ({})".format(
        fake.__version__, cls, name, tuple(a for a in args[1:]) if args else (), "; ".join(problems)))
