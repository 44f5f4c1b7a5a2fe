"""Unit tests of the Python guest SDK under plain CPython
(`python3 -m unittest discover guest-sdk/python`): canonical MessagePack,
and `invoke` for each kind on hand-built columnar inputs (with stand-ins for
the bindings componentize-py generates)."""

import dataclasses
import enum
import sys
import types
import unittest

import sluice
from sluice import _msgpack as m


def _fake_bindings():
    t = types.ModuleType("wit_world.imports.types")

    @dataclasses.dataclass
    class Column:
        bytes: bytes
        offsets: list

    @dataclasses.dataclass
    class Batch:
        keys: Column
        values: Column

    @dataclasses.dataclass
    class CallOutput_Batch:
        value: Batch

    @dataclasses.dataclass
    class CallOutput_Selection:
        value: list

    class CallOutput_None_:
        pass

    @dataclasses.dataclass
    class PluginError:
        kind: object
        message: str
        element: object

    @dataclasses.dataclass
    class FunctionInfo:
        name: str
        kind: object
        doc: str

    @dataclasses.dataclass
    class PluginInfo:
        name: str
        version: str
        sdk: str
        functions: list

    t.Column, t.Batch, t.PluginError = Column, Batch, PluginError
    t.CallOutput_Batch, t.CallOutput_Selection, t.CallOutput_None_ = (
        CallOutput_Batch,
        CallOutput_Selection,
        CallOutput_None_,
    )
    t.FunctionInfo, t.PluginInfo = FunctionInfo, PluginInfo
    t.FunctionKind = enum.Enum(
        "FunctionKind",
        "MAP FLAT_MAP FILTER MAP_PARTITIONS REDUCE INVERSE_REDUCE UPDATE_STATE MAP_STATE TRANSFORM SINK",
    )
    t.ErrorKind = enum.Enum("ErrorKind", "INVALID_INPUT UNKNOWN_FUNCTION UNSUPPORTED FAILED")
    cpt = types.ModuleType("componentize_py_types")

    class Err(Exception):
        def __init__(self, value):
            super().__init__(value)
            self.value = value

    cpt.Err = Err
    imports = types.ModuleType("wit_world.imports")
    imports.types = t
    world = types.ModuleType("wit_world")
    world.imports = imports
    sys.modules.update(
        {
            "wit_world": world,
            "wit_world.imports": imports,
            "wit_world.imports.types": t,
            "componentize_py_types": cpt,
        }
    )
    return t, Err


T, ERR = _fake_bindings()


def column(values, absent=()):
    parts = [b"" if i in absent else bytes(m.encode(v)) for i, v in enumerate(values)]
    offsets = [0]
    for p in parts:
        offsets.append(offsets[-1] + len(p))
    return T.Column(b"".join(parts), offsets if values else [])


def decoded(c):
    o = c.offsets
    return [None if o[i] == o[i + 1] else m.loads(c.bytes[o[i]:o[i + 1]]) for i in range(len(o) - 1)]


class Ctx:
    batch_time_ms, partition, partitions, attempt = 1000, 0, 1, 0


def call(op, index, values, keys=(), groups=(), secondary=None):
    inp = types.SimpleNamespace(
        primary=T.Batch(column(list(keys)), column(values)),
        groups=list(groups),
        secondary=secondary or T.Column(b"", []),
    )
    return op.invoke(index, Ctx(), inp)


class MsgpackTest(unittest.TestCase):
    def test_canonical_like_the_rust_sdk(self):
        self.assertEqual(bytes(m.encode(("the", 1))).hex(), "92a374686501")
        self.assertEqual(bytes(m.encode(300)).hex(), "cd012c")
        self.assertEqual(bytes(m.encode(-33)).hex(), "d0df")
        self.assertEqual(bytes(m.encode("é")).hex(), "a2c3a9")
        self.assertEqual(bytes(m.encode(1.5)).hex(), "cb3ff8000000000000")
        for v in [0, -1, 2**40, -(2**40), "x" * 40, [1, [2, "b"]], {"k": 1}, True, None, b"ab"]:
            self.assertEqual(m.loads(bytes(m.encode(v))), v)


class InvokeTest(unittest.TestCase):
    def setUp(self):
        @sluice.flat_map
        def split(line):
            return (w for w in line.split(" "))

        @sluice.map
        def pair(w):
            return (w, 1)

        @sluice.filter
        def long(w):
            return len(w) > 1

        @sluice.reduce
        def add(a, b):
            return a + b

        @sluice.update_state
        def total(news, t):
            return sum(news) + (t or 0) if news else None

        @sluice.map
        def refuse(w):
            if w == "bad":
                raise sluice.Refuse("no bad words")
            return w

        self.op = sluice.export(split, pair, long, add, total, refuse, name="t")()

    def test_every_kind(self):
        op = self.op
        kinds = [(f.name, f.kind.name) for f in op.describe().functions]
        self.assertEqual(kinds[0], ("split", "FLAT_MAP"))
        self.assertEqual(decoded(call(op, 0, ["a bb", "c"]).value.values), ["a", "bb", "c"])
        self.assertEqual(decoded(call(op, 1, ["a"]).value.values), [["a", 1]])
        self.assertEqual(call(op, 2, ["a", "bb", "ccc"]).value, [1, 2])
        self.assertEqual(decoded(call(op, 3, [1, 2, 3, 10], groups=[0, 3, 4]).value.values), [6, 10])
        states = column([None, 5, 7], absent=(0,))
        out = call(op, 4, [1, 2, 3], groups=[0, 2, 2, 3], secondary=states).value.values
        self.assertEqual(decoded(out), [3, None, 10])
        keyed = call(op, 1, ["x", "y"], keys=["k1", "k2"]).value
        self.assertEqual(decoded(keyed.keys), ["k1", "k2"])
        self.assertEqual(decoded(keyed.values), [["x", 1], ["y", 1]])
        self.assertEqual(sluice.context().batch_time_ms, 1000)

    def test_refusals_name_their_element(self):
        with self.assertRaises(ERR) as e:
            call(self.op, 5, ["ok", "bad"])
        err = e.exception.value
        self.assertEqual((err.kind.name, err.element, err.message), ("INVALID_INPUT", 1, "no bad words"))
        with self.assertRaises(ERR) as e:
            call(self.op, 9, [])
        self.assertEqual(e.exception.value.kind.name, "UNKNOWN_FUNCTION")


if __name__ == "__main__":
    unittest.main()


class MapStateTest(unittest.TestCase):
    def test_state_per_key_and_timeouts(self):
        @sluice.map_state
        def count(word, one, state):
            total = state.get() or 0
            if one is None:
                return (word, total, True)
            state.update(total + one)
            return (word, total + one, False)

        op = sluice.export(count, name="t")()
        inp = types.SimpleNamespace(
            primary=T.Batch(column(["a", "a", "b"]), column([1, 1, 0], absent=(2,))),
            groups=[0, 2, 3],
            secondary=column([2, 5]),
        )
        out = op.invoke(0, Ctx(), inp).value.values
        self.assertEqual(decoded(out), [["a", 3, False], ["a", 4, False], ["b", 5, True], 4, None])
