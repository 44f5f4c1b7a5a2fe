"""Shipping functions to the runner: each function a job passes to a
transformation becomes its source text plus its captured values.

Pickled code objects do not cross Python minor versions (the driver may be
3.9 while the runner is 3.14); source text does. A function is shipped as

- its source: a ``def`` (decorators dropped) or the ``lambda`` expression
  itself, cut from its file with ``ast``, default values blanked (they are
  shipped by value and put back);
- its captures: every global it reads and every closure cell, by value
  (``sluice/_values.py``), each user function it calls shipped the same way,
  each module by name (one the runner carries), each builtin or library
  function by its module and name.

What cannot be shipped raises :class:`ShipError` at once, naming the
function, its file and line, and the capture at fault.
"""

import ast
import builtins
import dis
import linecache
import pickle
import pickletools
import textwrap
import types

from . import _carried, _values
from ._rdd import RDD

_BIND = "__sluice_function__"


class ShipError(ValueError):
    """A function that cannot run in the runner, and why."""


def _where(fn):
    code = fn.__code__
    return f"`{fn.__qualname__}` ({code.co_filename}:{code.co_firstlineno})"


def _carried_module(name):
    """Whether the runner can import module ``name`` (its C twins, such as
    ``_operator`` for ``operator``, included)."""
    if name == "builtins":
        return True
    root = name.lstrip("_")
    return name in _carried.RUNNER_MODULES or root in _carried.RUNNER_MODULES


_parsed = {}


def _module_tree(filename):
    """The file's text and syntax tree (``None`` when it cannot be read)."""
    if filename not in _parsed:
        lines = linecache.getlines(filename)
        text = "".join(lines)
        try:
            tree = ast.parse(text, filename=filename) if text else None
        except SyntaxError:
            tree = None
        _parsed[filename] = (text, tree)
    return _parsed[filename]


def _global_names(code):
    """The global names ``code`` (and the code nested in it) reads."""
    names = set()
    stack = [code]
    while stack:
        c = stack.pop()
        for ins in dis.get_instructions(c):
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
                names.add(ins.argval if isinstance(ins.argval, str) else ins.argrepr.split(" ")[-1])
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return names


def _lambda_node(fn, tree):
    """The ``lambda`` of ``fn`` in its file's tree."""
    code = fn.__code__
    line = code.co_firstlineno
    found = [n for n in ast.walk(tree) if isinstance(n, ast.Lambda) and n.lineno == line]
    if len(found) > 1:
        args = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        found = [
            n
            for n in found
            if tuple(a.arg for a in n.args.posonlyargs + n.args.args + n.args.kwonlyargs) == args
        ]
    if len(found) > 1 and hasattr(code, "co_positions"):
        # 3.11+: the columns of the lambda's own instructions.
        cols = [p[2] for p in code.co_positions() if p[2] is not None and p[3] is not None and p[3] > p[2]
                and p[0] == line]
        if cols:
            col = min(cols)
            inside = [n for n in found if n.col_offset <= col and (n.end_lineno > line or col <= n.end_col_offset)]
            # The innermost lambda that holds the column.
            if inside:
                found = [max(inside, key=lambda n: n.col_offset)]
    if len(found) > 1:
        raise ShipError(
            f"cannot ship {_where(fn)}: several lambdas with the same arguments are on its line; "
            "put it on a line of its own or make it a def"
        )
    return found[0] if found else None


def _def_node(fn, tree):
    code = fn.__code__
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == code.co_name:
            first = n.decorator_list[0].lineno if n.decorator_list else n.lineno
            if code.co_firstlineno in (first, n.lineno):
                return n
    return None


def _source(fn):
    """``(text, first line)`` of ``fn``'s definition, binding it to
    ``_BIND``, with its default values blanked (``None``), line numbers
    kept."""
    code = fn.__code__
    text, tree = _module_tree(code.co_filename)
    if tree is None:
        raise ShipError(
            f"cannot ship {_where(fn)}: its source is not available (a function typed at an "
            "interactive prompt or made with exec or eval); define it in a file"
        )
    is_lambda = fn.__name__ == "<lambda>"
    node = _lambda_node(fn, tree) if is_lambda else _def_node(fn, tree)
    if node is None:
        raise ShipError(f"cannot ship {_where(fn)}: its definition is not in {code.co_filename} as the file is now")
    lines = text.splitlines(keepends=True)
    defaults = [d for d in node.args.defaults + node.args.kw_defaults if d is not None]
    # Blank the defaults from the last: earlier positions stay valid.
    for d in sorted(defaults, key=lambda d: (d.lineno, d.col_offset), reverse=True):
        _replace(lines, d, "None" + "\n" * (d.end_lineno - d.lineno))
    first, last = node.lineno, node.end_lineno
    chunk = lines[first - 1 : last]
    end_col = _col(lines[last - 1], node.end_col_offset)
    start_col = _col(lines[first - 1], node.col_offset)
    if len(chunk) == 1:
        chunk = [chunk[0][start_col:end_col]]
    else:
        chunk[-1] = chunk[-1][:end_col]
        chunk[0] = " " * start_col + chunk[0][start_col:]
    if is_lambda:
        # Inside parentheses its lines need no common indentation.
        return f"{_BIND} = ({''.join(chunk)})\n", first
    body = textwrap.dedent("".join(chunk))
    return f"{body}\n{_BIND} = {code.co_name}\n", first


def _col(line, byte_col):
    """A character column from ``ast``'s UTF-8 byte column."""
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", "replace"))


def _replace(lines, node, new):
    a, b = node.lineno - 1, node.end_lineno - 1
    ca, cb = _col(lines[a], node.col_offset), _col(lines[b], node.end_col_offset)
    merged = lines[a][:ca] + new + lines[b][cb:]
    lines[a : b + 1] = merged.splitlines(keepends=True) + [""] * (b - a + 1 - len(merged.splitlines(keepends=True)))


class Program:
    """The functions of one job, as the runner is given them."""

    def __init__(self):
        self.defs = []
        self.functions = []
        self._shipped = {}

    def ship(self, fn, role="function"):
        """Ships ``fn`` (a Python function or a library callable); returns
        its index in ``defs``."""
        # Keyed by identity, holding the function: an id is reused once
        # its object is gone.
        key = id(fn)
        if key in self._shipped:
            return self._shipped[key][1]
        if isinstance(fn, types.FunctionType):
            return self._ship_function(fn)
        return self._ship_callable(fn, role)

    def _ship_callable(self, fn, role):
        """A builtin or library callable (``operator.add``, ``len``,
        ``str.split``): a def that refers to it by module and name."""
        module = getattr(fn, "__module__", None)
        name = getattr(fn, "__qualname__", None)
        if module is None and hasattr(fn, "__objclass__"):
            module = fn.__objclass__.__module__
        if not module or not name or not _carried_module(module) or "<" in name:
            raise ShipError(
                f"cannot ship the {role} {fn!r}: only Python functions and the callables of the "
                f"modules the runner carries can be shipped ({', '.join(_carried.RUNNER_MODULES)})"
            )
        index = len(self.defs)
        self._shipped[id(fn)] = (fn, index)
        self.defs.append(
            {
                "name": name,
                "module": "__main__",
                "file": "<shipped>",
                "line": 1,
                "source": f"{_BIND} = target",
                "bind": _BIND,
                "captures": {"target": ("attr", module, name)},
                "defaults": None,
                "kwdefaults": None,
            }
        )
        return index

    def _ship_function(self, fn):
        code = fn.__code__
        source, line = _source(fn)
        index = len(self.defs)
        self._shipped[id(fn)] = (fn, index)
        entry = {
            "name": fn.__qualname__,
            "module": fn.__module__ or "__main__",
            "file": code.co_filename,
            "line": line,
            "source": source,
            "bind": _BIND,
            "captures": {},
            "defaults": None,
            "kwdefaults": None,
        }
        self.defs.append(entry)
        captures = {}
        for name in sorted(_global_names(code)):
            if name in fn.__globals__:
                captures[name] = fn.__globals__[name]
            elif not hasattr(builtins, name):
                raise ShipError(f"cannot ship {_where(fn)}: it reads `{name}`, which is not defined")
        for name, cell in zip(code.co_freevars, fn.__closure__ or ()):
            try:
                captures[name] = cell.cell_contents
            except ValueError:
                raise ShipError(f"cannot ship {_where(fn)}: it reads `{name}` before it is assigned") from None
        entry["captures"] = {name: self._capture(fn, name, v) for name, v in captures.items()}
        if fn.__defaults__:
            entry["defaults"] = tuple(
                self._value(fn, f"a default value ({v!r:.40})", v) for v in fn.__defaults__
            )
        if fn.__kwdefaults__:
            entry["kwdefaults"] = {
                k: self._value(fn, f"the default of `{k}`", v) for k, v in fn.__kwdefaults__.items()
            }
        return index

    def _capture(self, fn, name, v):
        if isinstance(v, types.ModuleType):
            if not _carried_module(v.__name__):
                raise ShipError(
                    f"cannot ship {_where(fn)}: it uses module `{v.__name__}` (as `{name}`), which the "
                    f"runner does not carry (it carries {', '.join(_carried.RUNNER_MODULES)})"
                )
            return ("module", v.__name__)
        if isinstance(v, types.FunctionType):
            return ("def", self.ship(v))
        if isinstance(v, (types.BuiltinFunctionType, types.MethodDescriptorType, type)):
            module = getattr(v, "__module__", None) or ""
            qual = getattr(v, "__qualname__", "")
            if module and _carried_module(module) and "<" not in qual and "." not in qual:
                return ("attr", module, qual)
            raise ShipError(
                f"cannot ship {_where(fn)}: it uses `{name}` ({module}.{qual}), which the runner "
                "does not carry (what your program defines is shipped only as plain functions "
                "and values)"
            )
        return self._value(fn, f"`{name}`", v)

    def _value(self, fn, what, v):
        """``v`` by value: as an element (``_values``) or, for an object of
        a carried module (a compiled ``re`` pattern, a ``datetime``, a
        ``Counter``), pickled by value; else a :class:`ShipError`."""
        if isinstance(v, RDD):
            # A driver dataset (``sc.parallelize``) goes by value, as one.
            v, form = [list(p) for p in v._iter_partitions()], "rdd"
        else:
            form = "value"
        try:
            _values.dumps(v)
            return (form, v)
        except (TypeError, OverflowError, RecursionError) as e:
            error = e
        if form == "rdd":
            raise ShipError(f"cannot ship {_where(fn)}: it captures {what}, an RDD whose elements cannot be sent ({error})")
        pickled = _pickled(v)
        if pickled is not None:
            return ("pickle", pickled)
        kind = f"{type(v).__module__}.{type(v).__qualname__}"
        if type(v).__module__.startswith("sluice.pyspark."):
            # A SparkContext, StreamingContext or DStream: driver objects.
            raise ShipError(
                f"cannot ship {_where(fn)}: it captures {what}, a {type(v).__name__}, which stays on the "
                "driver: the function runs sandboxed in the runner (capture the RDD that sc.parallelize "
                "makes, or plain values, instead)"
            )
        raise ShipError(
            f"cannot ship {_where(fn)}: it captures {what}, a {kind}, which cannot be sent to the runner "
            f"by value ({error})"
        )

    def add(self, name, kind, doc="", steps=None, function=None, **extra):
        """Adds a runner function: a fused ``map-partitions`` chain of
        ``steps`` (``(step, def index)``), or one shipped ``function`` of
        ``kind`` (with the ``extra`` fields its kind reads); returns its
        name."""
        spec = dict(extra, name=name, kind=kind, doc=doc)
        if steps is not None:
            spec["steps"] = tuple(steps)
        else:
            spec["def"] = function
        self.functions.append(spec)
        return name

    def encode(self):
        """The program as the runner's ``define`` takes it."""
        return _values.dumps({"defs": tuple(self.defs), "functions": tuple(self.functions)})


def _pickled(v):
    """``v`` pickled, when every class and function the pickle names is of
    a module the runner carries (so it loads there); else ``None``."""
    try:
        data = pickle.dumps(v, protocol=4)
    except Exception:
        return None
    strings = []
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            module = arg.split(" ")[0]
        elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
            module = strings[-2]
        else:
            if isinstance(arg, str):
                strings.append(arg)
            continue
        if not _carried_module(module.split(".")[0]) and not _carried_module(module):
            return None
    return data
