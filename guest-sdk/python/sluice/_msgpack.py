"""Canonical MessagePack, as the Sluice host expects it (pure Python).

Smallest integer encodings, strings as ``str``, floats as float64, tuples
and lists as arrays, dicts as maps, ``bytes`` as ``bin``: equal values give
equal bytes, so the host can hash and compare keys without decoding them.
"""

import struct

_pack_d = struct.Struct(">d").pack
_unpack_from = struct.unpack_from


def encode(value, out=None):
    """Appends the encoding of ``value`` to ``out`` (a bytearray) and returns it."""
    if out is None:
        out = bytearray()
    _encode(value, out)
    return out


def _encode(v, out):
    t = type(v)
    if t is str:
        b = v.encode("utf-8")
        n = len(b)
        if n < 32:
            out.append(0xA0 | n)
            out += b
            return
    elif t is int and 0 <= v < 0x80:
        out.append(v)
        return
    elif t is tuple or t is list:
        # Pairs and small records: their short strings and small ints
        # inline, without a call each.
        n = len(v)
        if n < 16:
            out.append(0x90 | n)
        elif n < 0x10000:
            out.append(0xDC)
            out += n.to_bytes(2, "big")
        else:
            out.append(0xDD)
            out += n.to_bytes(4, "big")
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
            _encode(x, out)
        return
    if v is None:
        out.append(0xC0)
    elif v is True:
        out.append(0xC3)
    elif v is False:
        out.append(0xC2)
    elif isinstance(v, int):
        _encode_int(v, out)
    elif isinstance(v, float):
        out.append(0xCB)
        out += _pack_d(v)
    elif isinstance(v, str):
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
    elif isinstance(v, (list, tuple)):
        n = len(v)
        if n < 16:
            out.append(0x90 | n)
        elif n < 0x10000:
            out.append(0xDC)
            out += n.to_bytes(2, "big")
        else:
            out.append(0xDD)
            out += n.to_bytes(4, "big")
        for x in v:
            _encode(x, out)
    elif isinstance(v, dict):
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
            _encode(k, out)
            _encode(x, out)
    elif isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        n = len(b)
        if n < 0x100:
            out += bytes((0xC4, n))
        elif n < 0x10000:
            out.append(0xC5)
            out += n.to_bytes(2, "big")
        else:
            out.append(0xC6)
            out += n.to_bytes(4, "big")
        out += b
    else:
        raise TypeError(f"cannot encode a {type(v).__name__} as a Sluice value")


def _encode_int(v, out):
    if 0 <= v < 0x80:
        out.append(v)
    elif -32 <= v < 0:
        out.append(v & 0xFF)
    elif v >= 0:
        if v < 0x100:
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
            raise OverflowError(f"{v} does not fit in 64 bits")
    else:
        if v >= -0x80:
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
            raise OverflowError(f"{v} does not fit in 64 bits")


def decode(data, pos=0):
    """Decodes one value at ``pos``; returns ``(value, next position)``."""
    b = data[pos]
    pos += 1
    if b < 0x80:
        return b, pos
    if b >= 0xE0:
        return b - 0x100, pos
    if 0xA0 <= b <= 0xBF:
        n = b & 0x1F
        return str(data[pos:pos + n], "utf-8"), pos + n
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
    if b in (0xCC, 0xCD, 0xCE, 0xCF):
        n = 1 << (b - 0xCC)
        return int.from_bytes(data[pos:pos + n], "big"), pos + n
    if b in (0xD0, 0xD1, 0xD2, 0xD3):
        n = 1 << (b - 0xD0)
        return int.from_bytes(data[pos:pos + n], "big", signed=True), pos + n
    if b == 0xCB:
        return _unpack_from(">d", data, pos)[0], pos + 8
    if b == 0xCA:
        return _unpack_from(">f", data, pos)[0], pos + 4
    if b in (0xD9, 0xDA, 0xDB):
        w = 1 << (b - 0xD9)
        n = int.from_bytes(data[pos:pos + w], "big")
        pos += w
        return str(data[pos:pos + n], "utf-8"), pos + n
    if b in (0xC4, 0xC5, 0xC6):
        w = 1 << (b - 0xC4)
        n = int.from_bytes(data[pos:pos + w], "big")
        pos += w
        return bytes(data[pos:pos + n]), pos + n
    if b in (0xDC, 0xDD):
        w = 2 if b == 0xDC else 4
        return _array(data, pos + w, int.from_bytes(data[pos:pos + w], "big"))
    if b in (0xDE, 0xDF):
        w = 2 if b == 0xDE else 4
        return _map(data, pos + w, int.from_bytes(data[pos:pos + w], "big"))
    raise ValueError(f"unsupported MessagePack marker 0x{b:02x}")


def _array(data, pos, n):
    items = []
    for _ in range(n):
        v, pos = decode(data, pos)
        items.append(v)
    return items, pos


def _map(data, pos, n):
    d = {}
    for _ in range(n):
        k, pos = decode(data, pos)
        v, pos = decode(data, pos)
        if isinstance(k, list):
            k = tuple(k)
        d[k] = v
    return d, pos


def loads(data):
    """Decodes bytes holding exactly one value."""
    v, end = decode(data, 0)
    if end != len(data):
        raise ValueError(f"{len(data) - end} bytes after the value")
    return v
