"""Sluice for Python: the stream engine embedded in your process.

``sluice.pyspark`` is PySpark's streaming API on it: change ``import
pyspark`` to ``from sluice import pyspark`` (and ``from pyspark.streaming
import ...`` to ``from sluice.pyspark.streaming import ...``) and the
program runs on Sluice, every function it passes to a transformation
running sandboxed in WebAssembly (CPython in wasm).
"""

__version__ = "0.1.0"
