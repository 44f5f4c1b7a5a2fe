"""The plugin side of the `sluice:plugin` contract: ``describe`` and
``invoke`` over columnar batches of MessagePack values (see ``wit/``)."""

import os
import traceback

import sluice
from ._msgpack import _encode, decode, encode

_KINDS = {
    "map": "MAP",
    "flat-map": "FLAT_MAP",
    "filter": "FILTER",
    "map-partitions": "MAP_PARTITIONS",
    "reduce": "REDUCE",
    "inverse-reduce": "INVERSE_REDUCE",
    "update-state": "UPDATE_STATE",
    "map-state": "MAP_STATE",
    "transform": "TRANSFORM",
    "sink": "SINK",
    "receiver": "RECEIVER",
}

_ABSENT = object()


def describe(name, version, functions):
    from wit_world.imports import types as t

    return t.PluginInfo(
        name=name,
        version=version,
        sdk=sluice.SDK,
        functions=[
            t.FunctionInfo(name=f.name, kind=getattr(t.FunctionKind, _KINDS[f.kind]), doc=f.doc)
            for f in functions
        ],
    )


def _raw(column):
    """The encoded elements of a column (empty bytes: absent)."""
    data, offs = column.bytes, column.offsets
    return [data[offs[i]:offs[i + 1]] for i in range(len(offs) - 1)]


def _value(raw):
    return _ABSENT if not raw else decode(raw, 0)[0]


def _decoded(column):
    """The decoded elements of a column (absent ones as ``_ABSENT``)."""
    data, offs = column.bytes, column.offsets
    out = []
    append = out.append
    for i in range(len(offs) - 1):
        a, b = offs[i], offs[i + 1]
        if a == b:
            append(_ABSENT)
            continue
        marker = data[a]
        if 0xA0 <= marker <= 0xBF:  # a short string: the whole element
            append(str(data[a + 1:b], "utf-8"))
        elif marker < 0x80:
            append(marker)
        else:
            append(decode(data, a)[0])
    return out


class _Out:
    """A column being built."""

    __slots__ = ("data", "offsets")

    def __init__(self):
        self.data = bytearray()
        self.offsets = [0]

    def push(self, value):
        encode(value, self.data)
        self.offsets.append(len(self.data))

    def push_raw(self, raw):
        self.data += raw
        self.offsets.append(len(self.data))

    def absent(self):
        self.offsets.append(len(self.data))

    def column(self, t):
        return t.Column(bytes=bytes(self.data), offsets=self.offsets if len(self.offsets) > 1 else [])


class _CallError(Exception):
    def __init__(self, kind, message, element=None):
        super().__init__(message)
        self.kind, self.message, self.element = kind, message, element


def _refusing(i, call, *args):
    try:
        return call(*args)
    except sluice.Refuse as e:
        raise _CallError("INVALID_INPUT", str(e) or "refused", i) from None


def _guarded(call, *args):
    """``call(*args)`` as an export: a ``_CallError`` becomes the typed
    error, any other exception traps after logging where it came from."""
    from componentize_py_types import Err
    from wit_world.imports import types as t

    try:
        return call(t, *args)
    except _CallError as e:
        raise Err(
            t.PluginError(kind=getattr(t.ErrorKind, e.kind), message=e.message, element=e.element)
        ) from None
    except Exception as e:
        # A bug: the call traps (and is retried once); the error log line
        # becomes the host's message for it.
        frames = traceback.extract_tb(e.__traceback__)
        where = f" ({os.path.basename(frames[-1].filename)}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
        sluice.error(f"{type(e).__name__}: {e}{where}")
        raise


def invoke(functions, index, ctx, inp):
    return _guarded(_invoke, functions, index, ctx, inp)


# The receiver this instance runs (the host gives each receiver source an
# instance of its own).
_receiver = None


def _failing(what, call, *args):
    """``call(*args)``; ``Refuse`` and ``OSError`` (a connection lost) are
    typed ``failed`` errors, which the host reports and retries."""
    try:
        return call(*args)
    except (sluice.Refuse, OSError) as e:
        raise _CallError("FAILED", f"{what}: {type(e).__name__}: {e}") from None


def _start(t, functions, index, settings):
    global _receiver
    if index >= len(functions):
        raise _CallError("UNKNOWN_FUNCTION", f"no function {index}: the plugin has {len(functions)} functions")
    f = functions[index]
    if f.kind != "receiver":
        raise _CallError("UNSUPPORTED", f"{f.name} is a {f.kind} function, not a receiver")
    try:
        _receiver = f.fn(dict(settings))
    except (sluice.Refuse, KeyError, ValueError) as e:
        # A missing or bad setting: the job stops with this message.
        raise _CallError("INVALID_INPUT", f"{type(e).__name__}: {e}") from None
    except OSError as e:
        raise _CallError("FAILED", f"{type(e).__name__}: {e}") from None


def _running():
    if _receiver is None:
        raise _CallError("FAILED", "the receiver is not started")
    return _receiver


def receiver_start(functions, index, settings):
    return _guarded(_start, functions, index, settings)


def receiver_poll(max_records, wait_ms):
    def poll(t):
        got = _failing("poll", _running().poll, max_records, wait_ms)
        return [r if isinstance(r, str) else str(r) for r in got or []]

    return _guarded(poll)


def receiver_ack():
    def ack(t):
        r = _running()
        if hasattr(r, "ack"):
            _failing("ack", r.ack)

    return _guarded(ack)


def receiver_stop():
    global _receiver
    r, _receiver = _receiver, None
    if r is not None and hasattr(r, "stop"):
        r.stop()


def _invoke(t, functions, index, ctx, inp):
    if index >= len(functions):
        raise _CallError("UNKNOWN_FUNCTION", f"no function {index}: the plugin has {len(functions)} functions")
    f = functions[index]
    sluice._context = sluice.Context(ctx.batch_time_ms, ctx.partition, ctx.partitions, ctx.attempt)
    kind = f.kind
    keys = _raw(inp.primary.keys)
    if keys or kind in ("inverse-reduce", "update-state", "reduce", "map-state"):
        raw = _raw(inp.primary.values)
    out = _Out()

    def batch(keys_out=None):
        empty = t.Column(bytes=b"", offsets=[])
        return t.CallOutput_Batch(
            t.Batch(keys=keys_out.column(t) if keys_out else empty, values=out.column(t))
        )

    if kind in ("map", "flat-map") and keys:
        # map_values / flat_map_values: the function sees values; outputs keep keys.
        keys_out = _Out()
        for i, (k, v) in enumerate(zip(keys, raw)):
            got = _refusing(i, f.fn, _value(v))
            for y in ([got] if kind == "map" else got):
                keys_out.push_raw(k)
                out.push(y)
        return batch(keys_out)

    def values():
        if keys:
            return [(_value(k), _value(v)) for k, v in zip(keys, raw)]
        return _decoded(inp.primary.values)

    if kind == "map":
        fn, data, offs = f.fn, out.data, out.offsets
        for i, v in enumerate(values()):
            try:
                y = fn(v)
            except sluice.Refuse as e:
                raise _CallError("INVALID_INPUT", str(e) or "refused", i) from None
            _encode(y, data)
            offs.append(len(data))
        return batch()
    if kind == "flat-map":
        fn, data, offs = f.fn, out.data, out.offsets
        for i, v in enumerate(values()):
            try:
                ys = fn(v)
            except sluice.Refuse as e:
                raise _CallError("INVALID_INPUT", str(e) or "refused", i) from None
            for y in ys:
                _encode(y, data)
                offs.append(len(data))
        return batch()
    if kind == "filter":
        return t.CallOutput_Selection([i for i, v in enumerate(values()) if _refusing(i, f.fn, v)])
    if kind in ("map-partitions", "transform"):
        if f.pair:
            other = [_value(v) for v in _raw(inp.secondary)]
            result = _refusing(None, f.fn, values(), other)
        else:
            result = _refusing(None, f.fn, values())
        for y in result:
            out.push(y)
        return batch()
    if kind == "sink":
        try:
            f.fn(values())
        except sluice.Refuse as e:
            raise _CallError("FAILED", str(e) or "the sink failed") from None
        return t.CallOutput_None_()
    groups = list(inp.groups)
    if kind == "reduce":
        for g in range(len(groups) - 1):
            start, end = groups[g], groups[g + 1]
            if start >= end or end > len(raw):
                raise _CallError("UNSUPPORTED", f"group {g} is empty or out of range ({start}..{end})")
            acc = _value(raw[start])
            for i in range(start + 1, end):
                acc = _refusing(i, f.fn, acc, _value(raw[i]))
            out.push(acc)
        return batch()
    if kind == "inverse-reduce":
        old = _raw(inp.secondary)
        if len(old) != len(raw):
            raise _CallError("UNSUPPORTED", "inverse-reduce needs one value to remove per element")
        for i, (a, b) in enumerate(zip(raw, old)):
            out.push(_refusing(i, f.fn, _value(a), _value(b)))
        return batch()
    if kind == "update-state":
        states = _raw(inp.secondary)
        for g in range(len(groups) - 1):
            start, end = groups[g], groups[g + 1]
            state = _value(states[g]) if g < len(states) else _ABSENT
            new = _refusing(
                start if start < end else None,
                f.fn,
                [_value(raw[i]) for i in range(start, end)],
                None if state is _ABSENT else state,
            )
            if new is None:
                out.absent()
            else:
                out.push(new)
        return batch()
    if kind == "map-state":
        states = _raw(inp.secondary)
        n = len(groups) - 1
        if len(states) != n or len(keys) != len(raw):
            raise _CallError(
                "UNSUPPORTED", f"{n} groups, {len(states)} states, {len(keys)} keys, {len(raw)} values"
            )
        finals = []
        for g in range(n):
            start, end = groups[g], groups[g + 1]
            if start >= end or end > len(raw):
                raise _CallError("UNSUPPORTED", f"group {g} is empty or out of range ({start}..{end})")
            value = _value(states[g])
            state = sluice.State(None if value is _ABSENT else value)
            for i in range(start, end):
                v = _value(raw[i])
                if v is _ABSENT:
                    state._timing_out = True
                    v = None
                got = _refusing(i, f.fn, _value(keys[i]), v, state)
                if got is None:
                    out.absent()
                else:
                    out.push(got)
            finals.append(None if state._timing_out else state._value)
        for final in finals:
            if final is None:
                out.absent()
            else:
                out.push(final)
        return batch()
    if kind == "receiver":
        raise _CallError("UNSUPPORTED", f"{f.name} is a receiver: a job uses it as a source, not as an operator")
    raise _CallError("UNSUPPORTED", f"function kind {kind} is not supported by {sluice.SDK}")
