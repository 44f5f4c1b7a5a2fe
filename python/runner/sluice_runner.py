"""The Python driver's runner: CPython in wasm running a job's lambdas.

Built once into a component (world ``runner-plugin``) by componentize-py;
the driver (``sluice.pyspark``) ships each job's functions to it as a
*program* — their source text and captured values — which ``define``
compiles in every new instance. The plugin's functions are the program's:

``map-partitions``
    a fused chain of narrow steps (``map``, ``flatMap``, ``filter``,
    ``mapPartitions``, ``mapPartitionsWithIndex``, ``mapValues``,
    ``flatMapValues``, ``combineLocally``: a ``reduceByKey``'s map side,
    as PySpark combines; ``ungroup``: ``partitionBy``'s; and ``shape``: the
    engine's arrays as PySpark's lists) run as PySpark runs them, one
    generator over the partition: the values between steps never leave
    the runner.
``reduce``, ``inverse-reduce``, ``update-state``, ``filter``, ``map``
    one shipped function, called as the engine's kind says.
``transform``
    one shipped function of whole batches (``transform``,
    ``transformWith``, ``StreamingContext.transform``): it gets each batch
    as a local ``RDD`` (``sluice._rdd``, the driver's own class), and the
    RDD operations it calls run here too.

The program is a MessagePack map (see ``sluice/_ship.py`` on the driver):
``defs`` (each: ``name``, ``module``, ``file``, ``line``, ``source``,
``bind``, ``captures``, ``defaults``, ``kwdefaults``) and ``functions``
(each: ``name``, ``kind``, ``doc``, and ``steps`` or ``def``). A capture is
``("value", v)``, ``("pickle", bytes)`` (an object of a carried module),
``("def", index)``, ``("module", name)`` or ``("attr", module, name)``;
default values are captures too.

An exception in a user function fails the call with its traceback, trimmed
to the user's frames, each naming the user's file and line.
"""

import ast
import builtins
import importlib
import itertools
import linecache
import pickle
import traceback
from datetime import datetime

import _carried
from _rdd import RDD, ResultIterable
from _rdd import _shaped as _as_pyspark
from _values import column_values, encode, loads

for _module in _carried.RUNNER_MODULES:
    importlib.import_module(_module)

from componentize_py_types import Err  # noqa: E402
from wit_world import exports  # noqa: E402
from wit_world.imports import types as t  # noqa: E402

SDK = "sluice-pyspark-runner 0.1.0"
VERSION = "0.1.0"
_OWN_FILES = ("sluice_runner.py", "_values.py", "_rdd.py")

_KINDS = {
    "map-partitions": t.FunctionKind.MAP_PARTITIONS,
    "reduce": t.FunctionKind.REDUCE,
    "inverse-reduce": t.FunctionKind.INVERSE_REDUCE,
    "update-state": t.FunctionKind.UPDATE_STATE,
    "filter": t.FunctionKind.FILTER,
    "map": t.FunctionKind.MAP,
    "transform": t.FunctionKind.TRANSFORM,
}
# What a transform function's batches are: its stream's (``one``), its and
# another's (``with``), or every stream's of a list (``all``).
_TRANSFORM_FORMS = ("one", "with", "all")
_STEPS = (
    "combineLocally",
    "map",
    "flatMap",
    "filter",
    "mapPartitions",
    "mapPartitionsWithIndex",
    "mapValues",
    "flatMapValues",
)

# (name, kind, doc, callable) per function, in the program's order.
_functions = []


class _Refused(Exception):
    """A program the runner cannot define (its message says why)."""


def _remember_source(filename, line, source):
    """Lets tracebacks show the user's lines: the shipped text at its place
    in the file (the runner never sees the file itself)."""
    lines = source.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    entry = linecache.cache.get(filename)
    have = list(entry[2]) if entry and len(entry) == 4 else []
    need = line - 1 + len(lines)
    if len(have) < need:
        have += ["\n"] * (need - len(have))
    have[line - 1 : line - 1 + len(lines)] = lines
    linecache.cache[filename] = (sum(map(len, have)), None, have, filename)


def _where(d):
    return f"`{d['name']}` ({d['file']}:{d['line']})"


def _resolve(capture, made, d, name):
    what = capture[0]
    if what == "value":
        return capture[1]
    if what == "def":
        return made[capture[1]]
    if what == "pickle":
        return pickle.loads(capture[1])
    if what == "rdd":
        return RDD._of(capture[1])
    if what in ("module", "attr"):
        try:
            module = importlib.import_module(capture[1])
        except ImportError:
            raise _Refused(
                f"function {_where(d)} uses module `{capture[1]}` (as `{name}`), which the runner "
                "does not carry"
            ) from None
        if what == "module":
            return module
        try:
            found = module
            for part in capture[2].split("."):
                found = getattr(found, part)
            return found
        except AttributeError:
            raise _Refused(
                f"function {_where(d)} uses `{capture[1]}.{capture[2]}` (as `{name}`), which the "
                "runner's Python does not have"
            ) from None
    raise _Refused(f"function {_where(d)}: capture `{name}` is of an unknown form {what!r}")


def _define(program):
    defs = program["defs"]
    made = []
    spaces = []
    for d in defs:
        ns = {"__builtins__": builtins, "__name__": d["module"]}
        # What it captures, but the functions (made below, in any order).
        for name, capture in d["captures"].items():
            if capture[0] != "def":
                ns[name] = _resolve(capture, made, d, name)
        try:
            tree = ast.parse(d["source"], filename=d["file"], mode="exec")
            ast.increment_lineno(tree, d["line"] - 1)
            code = compile(tree, d["file"], "exec")
            _remember_source(d["file"], d["line"], d["source"])
            exec(code, ns)
            made.append(ns[d["bind"]])
        except Exception as e:
            raise _Refused(f"function {_where(d)} does not compile in the runner: {type(e).__name__}: {e}") from None
        spaces.append(ns)
    for d, ns, f in zip(defs, spaces, made):
        for name, capture in d["captures"].items():
            if capture[0] == "def":
                ns[name] = made[capture[1]]
        if d.get("defaults") is not None:
            f.__defaults__ = tuple(_resolve(c, made, d, "a default") for c in d["defaults"])
        if d.get("kwdefaults"):
            f.__kwdefaults__ = {k: _resolve(c, made, d, k) for k, c in d["kwdefaults"].items()}
    functions = []
    for spec in program["functions"]:
        kind = spec["kind"]
        if kind not in _KINDS:
            raise _Refused(f"function `{spec['name']}` is of kind {kind!r}, which the runner does not run")
        if kind == "map-partitions":
            steps = []
            for step, index in spec["steps"]:
                if step in ("shape", "ungroup"):
                    steps.append((step, index))
                    continue
                if step not in _STEPS:
                    raise _Refused(f"function `{spec['name']}` has a step {step!r} the runner does not know")
                steps.append((step, made[index]))
            call = _pipeline(tuple(steps))
        elif kind == "transform":
            if spec.get("form") not in _TRANSFORM_FORMS:
                raise _Refused(f"function `{spec['name']}` transforms {spec.get('form')!r}, not one of {_TRANSFORM_FORMS}")
            call = (made[spec["def"]], bool(spec.get("with_time")), spec["form"], tuple(spec.get("shapes") or ()))
        else:
            call = made[spec["def"]]
        functions.append((spec["name"], kind, spec.get("doc", ""), call))
    _functions[:] = functions


def _pipeline(steps):
    """One generator over a partition running ``steps`` as PySpark does."""

    def run(partition, it):
        for step, f in steps:
            if step == "map":
                it = map(f, it)
            elif step == "flatMap":
                it = itertools.chain.from_iterable(map(f, it))
            elif step == "filter":
                it = filter(f, it)
            elif step == "mapPartitions":
                it = f(it)
            elif step == "mapPartitionsWithIndex":
                it = f(partition, it)
            elif step == "shape":
                it = _shaped(f, it)
            elif step == "ungroup":
                it = ((k, v) for k, vs in it for v in vs)
            elif step == "combineLocally":
                it = _combine_locally(f, it)
            elif step == "mapValues":
                it = ((kv[0], f(kv[1])) for kv in it)
            else:  # flatMapValues
                it = ((kv[0], x) for kv in it for x in f(kv[1]))
        return it

    return run


def _combine_locally(f, it):
    """The values of each key of the partition reduced by ``f``, in order
    (PySpark's ``combineLocally`` before a ``reduceByKey`` shuffle)."""
    combined = {}
    for k, v in it:
        combined[k] = f(combined[k], v) if k in combined else v
    return iter(combined.items())


def _shaped(shape, it):
    """The engine's arrays as PySpark's lists: ``groupByKey``'s and
    ``cogroup``'s values, ``glom``'s partitions."""
    if shape == "group":
        return ((k, list(v)) for k, v in it)
    if shape == "cogroup":
        return ((k, (list(a), list(b))) for k, (a, b) in it)
    return (list(x) for x in it)


def _elements(batch):
    """The batch's elements: values, or ``(key, value)`` tuples when keyed."""
    values = column_values(batch.values.bytes, batch.values.offsets)
    if batch.keys.offsets:
        keys = column_values(batch.keys.bytes, batch.keys.offsets)
        return list(zip(keys, values))
    return values


def _transform(call, ctx, inp):
    """The elements ``transform``'s function makes of the call's batches."""
    f, with_time, form, shapes = call

    def rdd(i, elements):
        return RDD._of([_as_pyspark(shapes[i] if i < len(shapes) else None, elements)])

    batch = _elements(inp.primary)
    if form == "with":
        args = [rdd(0, batch), rdd(1, column_values(inp.secondary.bytes, inp.secondary.offsets))]
    elif form == "all":
        args = [[rdd(i, list(b)) for i, b in enumerate(batch)]]
    else:
        args = [rdd(0, batch)]
    if with_time:
        args.insert(0, datetime.fromtimestamp(ctx.batch_time_ms / 1000))
    result = f(*args)
    if result is None:
        return []
    items = result.collect() if isinstance(result, RDD) else result
    return [_plain(x) for x in items]


def _plain(x):
    """An element as the engine carries it: ``ResultIterable`` as a list."""
    if isinstance(x, ResultIterable):
        return list(x.data)
    if isinstance(x, tuple):
        return tuple(_plain(e) for e in x)
    return x


class _Out:
    __slots__ = ("data", "offsets")

    def __init__(self):
        self.data = bytearray()
        self.offsets = [0]

    def push(self, value):
        encode(value, self.data)
        self.offsets.append(len(self.data))

    def absent(self):
        self.offsets.append(len(self.data))

    def batch(self):
        empty = t.Column(bytes=b"", offsets=[])
        values = t.Column(bytes=bytes(self.data), offsets=self.offsets if len(self.offsets) > 1 else [])
        return t.CallOutput_Batch(t.Batch(keys=empty, values=values))


def _user_traceback(e):
    """The exception as Python prints it, without the runner's own frames."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if not f.filename.endswith(_OWN_FILES)]
    text = "".join(traceback.format_list(frames))
    tail = "".join(traceback.format_exception_only(type(e), e))
    return "Traceback (most recent call last):\n" + text + tail


def _invoke(kind, call, ctx, inp):
    out = _Out()
    if kind == "map-partitions":
        for y in call(ctx.partition, iter(_elements(inp.primary))):
            out.push(y)
        return out.batch()
    if kind == "filter":
        return t.CallOutput_Selection([i for i, v in enumerate(_elements(inp.primary)) if call(v)])
    if kind == "map":
        for v in column_values(inp.primary.values.bytes, inp.primary.values.offsets):
            out.push(call(v))
        return out.batch()
    if kind == "transform":
        for y in _transform(call, ctx, inp):
            out.push(y)
        return out.batch()
    values = column_values(inp.primary.values.bytes, inp.primary.values.offsets)
    groups = inp.groups
    if kind == "reduce":
        for g in range(len(groups) - 1):
            start, end = groups[g], groups[g + 1]
            acc = values[start]
            for i in range(start + 1, end):
                acc = call(acc, values[i])
            out.push(acc)
        return out.batch()
    if kind == "inverse-reduce":
        old = column_values(inp.secondary.bytes, inp.secondary.offsets)
        for a, b in zip(values, old):
            out.push(call(a, b))
        return out.batch()
    # update-state: the batch's values of each key and its state (None: none).
    states = column_values(inp.secondary.bytes, inp.secondary.offsets)
    for g in range(len(groups) - 1):
        state = states[g] if g < len(states) else None
        new = call(list(values[groups[g] : groups[g + 1]]), state)
        if new is None:
            out.absent()
        else:
            out.push(new)
    return out.batch()


class Define(exports.Define):
    def define(self, program):
        try:
            _define(loads(program))
        except _Refused as e:
            raise Err(t.PluginError(kind=t.ErrorKind.INVALID_INPUT, message=str(e), element=None)) from None
        except Exception as e:
            message = f"the program does not load: {type(e).__name__}: {e}"
            raise Err(t.PluginError(kind=t.ErrorKind.INVALID_INPUT, message=message, element=None)) from None


class Operator(exports.Operator):
    def describe(self):
        return t.PluginInfo(
            name="python",
            version=VERSION,
            sdk=SDK,
            functions=[t.FunctionInfo(name=n, kind=_KINDS[k], doc=doc) for n, k, doc, _ in _functions],
        )

    def invoke(self, function, context, input):
        if function >= len(_functions):
            message = f"no function {function}: the program has {len(_functions)}"
            raise Err(t.PluginError(kind=t.ErrorKind.UNKNOWN_FUNCTION, message=message, element=None))
        _, kind, _, call = _functions[function]
        try:
            return _invoke(kind, call, context, input)
        except Exception as e:
            raise Err(
                t.PluginError(kind=t.ErrorKind.FAILED, message=_user_traceback(e), element=None)
            ) from None
