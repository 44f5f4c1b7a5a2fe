"""``RDD``: a batch of a stream on the driver (see ``sluice._rdd``)."""

from .._rdd import RDD, _shaped, portable_hash

__all__ = ["RDD", "portable_hash"]
