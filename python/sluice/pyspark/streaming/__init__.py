"""PySpark's streaming API on Sluice: ``from sluice.pyspark.streaming import
StreamingContext`` in place of ``from pyspark.streaming import ...``."""

from .context import StreamingContext, StreamingError
from .dstream import DStream
from .listener import StreamingListener

__all__ = ["StreamingContext", "StreamingError", "DStream", "StreamingListener"]
