"""Sluice guest SDK for Python: stream operators as plain functions.

A plugin is a module of decorated functions and one ``export`` line::

    import sluice

    @sluice.flat_map
    def split(line):
        return line.split(" ")

    @sluice.map
    def pair(word):
        return (word, 1)

    @sluice.reduce
    def add(a, b):
        return a + b

    Operator = sluice.export(split, pair, add, name="wordcount", version="0.1.0")

``sluice plugin build`` turns it into a WebAssembly component with
componentize-py; the decorated functions stay plain functions, so they can be
unit-tested with any Python.

Values are Sluice's typed values: ``str``, ``int`` (64-bit), ``float``,
``bool``, ``None``, ``bytes``, lists (tuples are sent as lists) and dicts. A
keyed element ``(key, value)`` arrives as a tuple. Decorators and the
function shapes they expect (as in the Rust SDK):

================  ==========================================  =================
decorator         function                                    used by
================  ==========================================  =================
``map``           ``f(x) -> y``                               map, map_values
``flat_map``      ``f(x) -> iterable``                        flat_map(_values)
``filter``        ``f(x) -> bool``                            filter
``map_partitions``  ``f(list) -> iterable``                   map_partitions
``transform``     ``f(list) -> iterable``                     transform
``transform_with``  ``f(list, other_list) -> iterable``       transform_with
``reduce``        ``f(a, b) -> c`` (associative)              reduce(_by_key), windows
``inverse_reduce``  ``f(acc, old) -> acc``                    windowed inverse
``update_state``  ``f(new_values, state or None) -> state``   update_state_by_key
``map_state``     ``f(key, value or None, state) -> out``     map_with_state
``fold``          ``f(acc, value) -> acc``                    combine_by_key
``sink``          ``f(list) -> None``                         foreach_rdd sinks
``receiver``      ``f(settings) -> obj`` (see below)          ``type = "receiver"`` sources
================  ==========================================  =================

A receiver is a source of the plugin's own (Spark's Receiver API): a class
(or function) that takes the source's ``settings`` (a dict of strings) and
returns an object with ``poll(max_records, wait_ms)`` (a list of text
records, at most ``max_records``, waiting at most ``wait_ms`` for the first)
and optionally ``ack()`` (everything polled so far is stored: acknowledge it
to the source) and ``stop()``. A missing setting (``KeyError``,
``ValueError`` or ``Refuse`` from the constructor) stops the job; an
``OSError`` or ``Refuse`` from ``poll`` or ``ack`` is reported and retried.
A module with receivers also assigns ``Receiver = Operator.Receiver``.

Raise ``sluice.Refuse("why")`` to refuse an element: the host fails the
batch naming the element. Any other exception is a bug: the instance traps,
the host retries the call once on a fresh instance, then fails the batch
with the traceback. ``sluice.info(...)`` (and ``debug``, ``warn``,
``error``) log through the host, tagged with job, plugin, function and batch.
"""

from . import _msgpack

__all__ = [
    "map",
    "flat_map",
    "filter",
    "map_partitions",
    "transform",
    "transform_with",
    "reduce",
    "inverse_reduce",
    "update_state",
    "map_state",
    "fold",
    "State",
    "sink",
    "receiver",
    "export",
    "Refuse",
    "context",
    "Context",
    "trace",
    "debug",
    "info",
    "warn",
    "error",
]

SDK = "sluice-sdk-python 0.1.0"


class Refuse(Exception):
    """Refuses the element being processed (a typed error, not a bug)."""


class Context:
    """Where and when the current call happens."""

    __slots__ = ("batch_time_ms", "partition", "partitions", "attempt")

    def __init__(self, batch_time_ms=0, partition=0, partitions=1, attempt=0):
        self.batch_time_ms = batch_time_ms
        self.partition = partition
        self.partitions = partitions
        self.attempt = attempt

    def __repr__(self):
        return (
            f"Context(batch_time_ms={self.batch_time_ms}, partition={self.partition}, "
            f"partitions={self.partitions}, attempt={self.attempt})"
        )


_context = Context()


def context():
    """The current call's :class:`Context` (batch time, partition, attempt)."""
    return _context


class Function:
    """A decorated plugin function: still callable as the plain function."""

    def __init__(self, fn, kind, pair=False):
        self.fn = fn
        self.kind = kind
        self.pair = pair
        self.name = fn.__name__
        doc = (fn.__doc__ or "").strip()
        self.doc = doc.splitlines()[0] if doc else ""

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __repr__(self):
        return f"<sluice {self.kind} function {self.name}>"


def _decorator(kind, pair=False):
    def wrap(fn):
        return Function(fn, kind, pair)

    wrap.__name__ = kind
    wrap.__doc__ = f"Marks a function as a Sluice `{kind}` function."
    return wrap


map = _decorator("map")  # noqa: A001 - Spark's name
flat_map = _decorator("flat-map")
filter = _decorator("filter")  # noqa: A001 - Spark's name
map_partitions = _decorator("map-partitions")
transform = _decorator("transform")
transform_with = _decorator("transform", pair=True)
reduce = _decorator("reduce")
inverse_reduce = _decorator("inverse-reduce")
update_state = _decorator("update-state")
map_state = _decorator("map-state")
sink = _decorator("sink")
receiver = _decorator("receiver")
#: A reduce-kind function whose accumulator differs from its values
#: (combine_by_key's merge_value): the same call shape as ``reduce``.
fold = reduce


class State:
    """The running state of one key in a ``map_state`` function."""

    __slots__ = ("_value", "_timing_out")

    def __init__(self, value, timing_out=False):
        self._value = value
        self._timing_out = timing_out

    def get(self):
        """The state, or ``None`` if the key has none."""
        return self._value

    def exists(self):
        """Whether the key has a state."""
        return self._value is not None

    def update(self, value):
        """Sets the key's state (a key that is timing out is removed anyway)."""
        self._value = value

    def remove(self):
        """Removes the key's state; if the key comes back it starts again."""
        self._value = None

    def is_timing_out(self):
        """Whether this call is the key's timeout (no new value)."""
        return self._timing_out


def _log(level, message):
    try:
        from wit_world.imports import host
    except ImportError:  # outside a component: plain stderr
        import sys

        print(f"[{level}] {message}", file=sys.stderr)
        return
    host.log(getattr(host.LogLevel, level.upper()), str(message))


def trace(message):
    """Logs at trace level."""
    _log("trace", message)


def debug(message):
    """Logs at debug level."""
    _log("debug", message)


def info(message):
    """Logs at info level."""
    _log("info", message)


def warn(message):
    """Logs at warn level."""
    _log("warn", message)


def error(message):
    """Logs at error level."""
    _log("error", message)


def export(*functions, name, version="0.1.0"):
    """The plugin's ``Operator`` (assign it to ``Operator`` in the module
    componentize-py builds): describes ``functions`` and calls them."""
    fns = list(functions)
    seen = set()
    for f in fns:
        if not isinstance(f, Function):
            raise TypeError(f"{f!r} is not a Sluice function: decorate it (e.g. @sluice.map)")
        if f.name in seen:
            raise ValueError(f"two functions are named `{f.name}`")
        seen.add(f.name)
    try:
        from wit_world import exports

        base = exports.Operator
    except ImportError:  # outside a component (unit tests)
        base = object

    from . import _guest

    class Operator(base):
        def describe(self):
            return _guest.describe(name, version, fns)

        def invoke(self, function, context, input):
            return _guest.invoke(fns, function, context, input)

    try:
        receiver_base = exports.Receiver
    except (NameError, AttributeError):  # no receivers, or outside a component
        receiver_base = object

    class Receiver(receiver_base):
        def start(self, function, settings):
            return _guest.receiver_start(fns, function, settings)

        def poll(self, max_records, wait_ms):
            return _guest.receiver_poll(max_records, wait_ms)

        def ack(self):
            return _guest.receiver_ack()

        def stop(self):
            return _guest.receiver_stop()

    Operator.__doc__ = f"The `{name}` plugin, version {version}."
    Operator.Receiver = Receiver
    return Operator
