"""A broker stream: one of Sluice's sources with the TOML spec's settings
(the fields of a ``[sources.NAME]`` table, the README's "Brokers"
section), built by the engine's own spec code, so its checks and errors
are the spec's: an error names the field at fault."""

import json
import os
import traceback

_PACKAGE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _call_site():
    """The program's file and line that asked for the stream (errors name
    it, and its folder locates relative paths: a CA file, credentials)."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if not os.path.abspath(frame.filename).startswith(_PACKAGE + os.sep):
            return os.path.abspath(frame.filename), frame.lineno or 0
    return os.path.join(os.getcwd(), "<driver>"), 0


def broker_stream(ssc, settings):
    origin, line = _call_site()
    return ssc._source("spec", {"settings": json.dumps(settings), "origin": origin, "line": line})
