"""Python values as Sluice elements: canonical MessagePack that keeps what
PySpark keeps.

The driver (this package) and the runner (CPython in wasm, built from
``python/runner``) share this file, so a value crosses between them, and
through the engine, unchanged:

==============  =========================================================
Python          MessagePack
==============  =========================================================
``None``        nil
``bool``        true / false
``int``         the smallest int encoding; beyond 64 bits, ext 1 (signed
                big-endian two's complement, fewest bytes)
``float``       float64
``str``         str
``bytes``       bin (``bytearray`` too)
``tuple``       array (a pair ``(k, v)`` is a keyed element to the engine)
``list``        ext 2 holding the array
``set``         ext 3 holding the array, ``frozenset`` ext 4 (in the
                order of their elements' encodings, so equal sets are
                equal bytes)
``dict``        map
==============  =========================================================

Arrays decode as tuples, so ``("word", 1)`` stays a tuple and a list stays
a list. Any other type is refused with a ``TypeError`` naming it.
"""

import struct

EXT_BIGINT = 1
EXT_LIST = 2
EXT_SET = 3
EXT_FROZENSET = 4

_pack_d = struct.Struct(">d").pack
_unpack_d = struct.Struct(">d").unpack_from
_unpack_f = struct.Struct(">f").unpack_from
_FIXEXT = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}


def dumps(value):
    """The encoding of ``value`` as bytes."""
    out = bytearray()
    encode(value, out)
    return bytes(out)


def encode(v, out):
    """Appends the encoding of ``v`` to the bytearray ``out``."""
    t = type(v)
    if t is str:
        b = v.encode("utf-8")
        n = len(b)
        if n < 32:
            out.append(0xA0 | n)
        elif n < 0x100:
            out += bytes((0xD9, n))
        elif n < 0x10000:
            out.append(0xDA)
            out += n.to_bytes(2, "big")
        else:
            out.append(0xDB)
            out += n.to_bytes(4, "big")
        out += b
    elif t is int:
        if 0 <= v < 0x80:
            out.append(v)
        else:
            _encode_int(v, out)
    elif t is tuple:
        _array_header(len(v), out)
        for x in v:
            tx = type(x)
            if tx is str:
                b = x.encode("utf-8")
                if len(b) < 32:
                    out.append(0xA0 | len(b))
                    out += b
                    continue
            elif tx is int and 0 <= x < 0x80:
                out.append(x)
                continue
            encode(x, out)
    elif v is None:
        out.append(0xC0)
    elif v is True:
        out.append(0xC3)
    elif v is False:
        out.append(0xC2)
    elif t is float:
        out.append(0xCB)
        out += _pack_d(v)
    elif t is list:
        inner = bytearray()
        _array_header(len(v), inner)
        for x in v:
            encode(x, inner)
        _ext(EXT_LIST, inner, out)
    elif t is dict:
        n = len(v)
        if n < 16:
            out.append(0x80 | n)
        elif n < 0x10000:
            out.append(0xDE)
            out += n.to_bytes(2, "big")
        else:
            out.append(0xDF)
            out += n.to_bytes(4, "big")
        for k, x in v.items():
            encode(k, out)
            encode(x, out)
    elif t is bytes or t is bytearray:
        n = len(v)
        if n < 0x100:
            out += bytes((0xC4, n))
        elif n < 0x10000:
            out.append(0xC5)
            out += n.to_bytes(2, "big")
        else:
            out.append(0xC6)
            out += n.to_bytes(4, "big")
        out += v
    elif t is set or t is frozenset:
        items = sorted(dumps(x) for x in v)
        inner = bytearray()
        _array_header(len(items), inner)
        for x in items:
            inner += x
        _ext(EXT_SET if t is set else EXT_FROZENSET, inner, out)
    elif isinstance(v, bool):
        out.append(0xC3 if v else 0xC2)
    elif isinstance(v, int):
        _encode_int(int(v), out)
    elif isinstance(v, float):
        out.append(0xCB)
        out += _pack_d(float(v))
    elif isinstance(v, str):
        encode(str(v), out)
    elif isinstance(v, tuple):
        encode(tuple(v), out)
    elif isinstance(v, list):
        encode(list(v), out)
    elif isinstance(v, dict):
        encode(dict(v), out)
    else:
        raise TypeError(
            f"a {type(v).__name__} cannot be an element ({v!r:.80}): elements are None, bool, "
            "int, float, str, bytes, tuple, list, set, frozenset and dict"
        )


def _array_header(n, out):
    if n < 16:
        out.append(0x90 | n)
    elif n < 0x10000:
        out.append(0xDC)
        out += n.to_bytes(2, "big")
    else:
        out.append(0xDD)
        out += n.to_bytes(4, "big")


def _ext(code, payload, out):
    n = len(payload)
    fixed = _FIXEXT.get(n)
    if fixed is not None:
        out.append(fixed)
    elif n < 0x100:
        out += bytes((0xC7, n))
    elif n < 0x10000:
        out.append(0xC8)
        out += n.to_bytes(2, "big")
    else:
        out.append(0xC9)
        out += n.to_bytes(4, "big")
    out.append(code)
    out += payload


def _encode_int(v, out):
    if -32 <= v < 0:
        out.append(v & 0xFF)
    elif v >= 0:
        if v < 0x80:
            out.append(v)
        elif v < 0x100:
            out += bytes((0xCC, v))
        elif v < 0x10000:
            out.append(0xCD)
            out += v.to_bytes(2, "big")
        elif v < 0x100000000:
            out.append(0xCE)
            out += v.to_bytes(4, "big")
        elif v < 0x10000000000000000:
            out.append(0xCF)
            out += v.to_bytes(8, "big")
        else:
            _ext(EXT_BIGINT, v.to_bytes(v.bit_length() // 8 + 1, "big", signed=True), out)
    elif v >= -0x80:
        out.append(0xD0)
        out += v.to_bytes(1, "big", signed=True)
    elif v >= -0x8000:
        out.append(0xD1)
        out += v.to_bytes(2, "big", signed=True)
    elif v >= -0x80000000:
        out.append(0xD2)
        out += v.to_bytes(4, "big", signed=True)
    elif v >= -0x8000000000000000:
        out.append(0xD3)
        out += v.to_bytes(8, "big", signed=True)
    else:
        _ext(EXT_BIGINT, v.to_bytes((-v - 1).bit_length() // 8 + 1, "big", signed=True), out)


def loads(data):
    """Decodes bytes holding exactly one value."""
    v, end = decode(data, 0)
    if end != len(data):
        raise ValueError(f"{len(data) - end} bytes after the value")
    return v


def decode(data, pos):
    """Decodes one value at ``pos``; returns ``(value, next position)``."""
    b = data[pos]
    pos += 1
    if b < 0x80:
        return b, pos
    if b >= 0xE0:
        return b - 0x100, pos
    if 0xA0 <= b <= 0xBF:
        n = b & 0x1F
        return str(data[pos : pos + n], "utf-8"), pos + n
    if 0x90 <= b <= 0x9F:
        return _array(data, pos, b & 0x0F)
    if 0x80 <= b <= 0x8F:
        return _map(data, pos, b & 0x0F)
    if b == 0xC0:
        return None, pos
    if b == 0xC2:
        return False, pos
    if b == 0xC3:
        return True, pos
    if 0xCC <= b <= 0xCF:
        n = 1 << (b - 0xCC)
        return int.from_bytes(data[pos : pos + n], "big"), pos + n
    if 0xD0 <= b <= 0xD3:
        n = 1 << (b - 0xD0)
        return int.from_bytes(data[pos : pos + n], "big", signed=True), pos + n
    if b == 0xCB:
        return _unpack_d(data, pos)[0], pos + 8
    if b == 0xCA:
        return _unpack_f(data, pos)[0], pos + 4
    if 0xD9 <= b <= 0xDB:
        w = 1 << (b - 0xD9)
        n = int.from_bytes(data[pos : pos + w], "big")
        pos += w
        return str(data[pos : pos + n], "utf-8"), pos + n
    if 0xC4 <= b <= 0xC6:
        w = 1 << (b - 0xC4)
        n = int.from_bytes(data[pos : pos + w], "big")
        pos += w
        return bytes(data[pos : pos + n]), pos + n
    if b == 0xDC or b == 0xDD:
        w = 2 if b == 0xDC else 4
        return _array(data, pos + w, int.from_bytes(data[pos : pos + w], "big"))
    if b == 0xDE or b == 0xDF:
        w = 2 if b == 0xDE else 4
        return _map(data, pos + w, int.from_bytes(data[pos : pos + w], "big"))
    if 0xD4 <= b <= 0xD8:
        return _ext_value(data, pos + 1, data[pos], 1 << (b - 0xD4))
    if 0xC7 <= b <= 0xC9:
        w = 1 << (b - 0xC7)
        n = int.from_bytes(data[pos : pos + w], "big")
        return _ext_value(data, pos + w + 1, data[pos + w], n)
    raise ValueError(f"unsupported MessagePack marker 0x{b:02x}")


def _ext_value(data, pos, code, n):
    end = pos + n
    if code == EXT_BIGINT:
        return int.from_bytes(data[pos:end], "big", signed=True), end
    if code in (EXT_LIST, EXT_SET, EXT_FROZENSET):
        items, at = decode(data, pos)
        if at != end:
            raise ValueError("a list, set or frozenset with bytes after its items")
        if code == EXT_LIST:
            return list(items), end
        return (set(items) if code == EXT_SET else frozenset(items)), end
    return bytes(data[pos:end]), end


def _array(data, pos, n):
    items = []
    append = items.append
    for _ in range(n):
        b = data[pos]
        if 0xA0 <= b <= 0xBF:
            end = pos + 1 + (b & 0x1F)
            append(str(data[pos + 1 : end], "utf-8"))
            pos = end
        elif b < 0x80:
            append(b)
            pos += 1
        else:
            v, pos = decode(data, pos)
            append(v)
    return tuple(items), pos


def _map(data, pos, n):
    d = {}
    for _ in range(n):
        k, pos = decode(data, pos)
        v, pos = decode(data, pos)
        d[k] = v
    return d, pos


def column_values(data, offsets):
    """The decoded elements of a column (``bytes`` + ``offsets``); an absent
    element (an empty range) is ``None``."""
    out = []
    append = out.append
    for i in range(len(offsets) - 1):
        a, b = offsets[i], offsets[i + 1]
        if a == b:
            append(None)
            continue
        m = data[a]
        if 0xA0 <= m <= 0xBF:
            append(str(data[a + 1 : b], "utf-8"))
        elif m < 0x80:
            append(m)
        else:
            append(decode(data, a)[0])
    return out
