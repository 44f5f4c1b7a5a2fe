"""``ResultIterable``: the values of one key after ``groupByKey`` or
``cogroup``, as PySpark gives them."""

from collections.abc import Iterable


class ResultIterable(Iterable):
    """The values of one key: iterable, with a length."""

    def __init__(self, data):
        self.data = data
        self.index = 0
        self.maxindex = len(data)

    def __iter__(self):
        return iter(self.data)

    def __len__(self):
        return len(self.data)

    def __eq__(self, other):
        return isinstance(other, ResultIterable) and list(self.data) == list(other.data)

    __hash__ = None
