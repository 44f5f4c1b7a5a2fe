"""PySpark's API on Sluice: ``from sluice import pyspark`` in place of
``import pyspark``.

Only what streaming programs use is here: :class:`SparkConf`,
:class:`SparkContext` (``local``, ``local[N]`` or ``local[*]`` masters: the
job runs in this process on N worker threads), the driver-side
:class:`RDD` that ``foreachRDD`` hands over, :class:`StorageLevel` (accepted,
ignored) and, in ``sluice.pyspark.streaming``, ``StreamingContext`` and
``DStream``.
"""

from .context import SparkConf, SparkContext
from .rdd import RDD
from .resultiterable import ResultIterable
from .storagelevel import StorageLevel

__all__ = ["SparkConf", "SparkContext", "RDD", "ResultIterable", "StorageLevel"]
