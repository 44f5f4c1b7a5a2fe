"""``ResultIterable``: the values of one key after ``groupByKey`` or
``cogroup``, as PySpark gives them."""

from .._rdd import ResultIterable

__all__ = ["ResultIterable"]
