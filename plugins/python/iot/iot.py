"""The IoT device log of the socket lesson's end project, in Python: lines
`<timestamp> <device> power on|off`, parsed in the sandbox and counted per
device by the host (the same functions as the Rust `plugins/iot`)."""

import sluice


def _parse_line(line):
    fields = line.split()
    if len(fields) != 4 or fields[2] != "power" or fields[3] not in ("on", "off"):
        return None
    return (fields[1], fields[3])


@sluice.flat_map
def parse(line):
    """`(device, "on"|"off")` for a well-formed line; a malformed one is logged and dropped."""
    parsed = _parse_line(line)
    if parsed is None:
        if line.strip():
            sluice.warn(f"not a device action, skipped: {line!r}")
        return []
    return [parsed]


@sluice.flat_map
def actions(line):
    """`(device, 1)` for every action of a well-formed line."""
    return [(device, 1) for device, _ in parse(line)]


@sluice.reduce
def add(a, b):
    """Adds two counts."""
    return a + b


@sluice.inverse_reduce
def subtract(a, b):
    """Takes a count back out (the inverse of `add`)."""
    return a - b


@sluice.filter
def active(pair):
    """Keeps devices with at least one action."""
    return pair[1] > 0


Operator = sluice.export(parse, actions, add, subtract, active, name="iot", version="0.1.0")
