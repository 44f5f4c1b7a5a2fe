"""A batch of a stream as a local dataset: the ``RDD`` that ``foreachRDD``
hands the driver (and that ``parallelize`` makes for ``queueStream``), and
the one a shipped ``transform`` function gets in the runner. This module
is shared by both sides, so it imports nothing of the driver.

Its elements are decoded only when asked for (``count`` decodes nothing,
``take(n)`` the first n); its transformations run where it is, on the
batch's elements, as PySpark's would on a collected batch.
"""

import functools
import heapq
import itertools
import operator
from collections import defaultdict
from collections.abc import Iterable

try:
    from ._values import column_values
except ImportError:  # in the runner, where the modules are top-level
    from _values import column_values


class ResultIterable(Iterable):
    """The values of one key after ``groupByKey`` or ``cogroup``, as PySpark
    gives them: iterable, with a length."""

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


def portable_hash(x):
    """PySpark's ``portable_hash``: a hash of ``x`` that is the same in
    every process (strings included), for ``partitionBy``."""
    if x is None:
        return 0
    if isinstance(x, tuple):
        h = 0x345678
        for i in x:
            h ^= portable_hash(i)
            h *= 1000003
            h &= 0xFFFFFFFFFFFFFFFF
        h ^= len(x)
        if h == -1:
            h = -2
        return int(h)
    return hash(x)


def _shaped(shape, elements):
    """Elements of a stream whose engine operator gives lists, as PySpark
    gives them: ``groupByKey``'s values as a ``ResultIterable``,
    ``cogroup``'s as a pair of them, ``glom``'s partitions as lists."""
    if shape == "group":
        return [(k, ResultIterable(list(v))) for k, v in elements]
    if shape == "cogroup":
        return [(k, (ResultIterable(list(a)), ResultIterable(list(b)))) for k, (a, b) in elements]
    if shape == "glom":
        return [list(x) for x in elements]
    return elements


class RDD:
    """A batch of elements in partitions, on the driver."""

    def __init__(self, partitions, ctx=None, lineage="ParallelCollectionRDD"):
        # Each partition: a list of elements, or a callable giving it.
        self._partitions = partitions
        self.ctx = ctx
        self._lineage = lineage

    @classmethod
    def _of(cls, lists, ctx=None):
        return cls([list(p) for p in lists], ctx)

    @classmethod
    def _of_columns(cls, columns, ctx=None, shape=None, lineage="SluiceBatchRDD"):
        def decoder(kb, ko, vb, vo):
            def decode():
                values = column_values(vb, vo)
                if len(ko) > 1:
                    values = list(zip(column_values(kb, ko), values))
                return _shaped(shape, values)

            decode.size = max(len(vo) - 1, 0)
            return decode

        return cls([decoder(*c) for c in columns], ctx, lineage)

    def _partition(self, i):
        p = self._partitions[i]
        if callable(p):
            p = self._partitions[i] = p()
        return p

    def _iter_partitions(self):
        for i in range(len(self._partitions)):
            yield self._partition(i)

    def _derive(self, f, name):
        """A local RDD whose partition i is ``f(i, partition i)``."""
        parent = self

        def part(i):
            return lambda: list(f(i, iter(parent._partition(i))))

        return RDD([part(i) for i in range(len(self._partitions))], self.ctx, f"{name} of {self._lineage}")

    # What a batch is.
    def getNumPartitions(self):
        return len(self._partitions)

    def count(self):
        return sum(getattr(p, "size", None) if callable(p) else len(p) for p in self._partitions)

    def isEmpty(self):
        return self.count() == 0

    def collect(self):
        return [x for p in self._iter_partitions() for x in p]

    def take(self, num):
        out = []
        for p in self._iter_partitions():
            if len(out) >= num:
                break
            out.extend(p[: num - len(out)])
        return out

    def first(self):
        got = self.take(1)
        if not got:
            raise ValueError("RDD is empty")
        return got[0]

    def glom(self):
        return RDD([[list(p)] for p in self._iter_partitions()], self.ctx, f"glom of {self._lineage}")

    def toDebugString(self):
        return f"({self.getNumPartitions()}) {self._lineage} []".encode()

    def id(self):
        return id(self)

    def context(self):
        return self.ctx

    def cache(self):
        return self

    def persist(self, storageLevel=None):
        return self

    def unpersist(self, blocking=False):
        return self

    # Actions with side effects.
    def foreach(self, f):
        for p in self._iter_partitions():
            for x in p:
                f(x)

    def foreachPartition(self, f):
        for p in self._iter_partitions():
            f(iter(p))

    # Transformations, run here.
    def map(self, f, preservesPartitioning=False):
        return self._derive(lambda _, it: map(f, it), "map")

    def flatMap(self, f, preservesPartitioning=False):
        return self._derive(lambda _, it: itertools.chain.from_iterable(map(f, it)), "flatMap")

    def filter(self, f):
        return self._derive(lambda _, it: filter(f, it), "filter")

    def mapPartitions(self, f, preservesPartitioning=False):
        return self._derive(lambda _, it: f(it), "mapPartitions")

    def mapPartitionsWithIndex(self, f, preservesPartitioning=False):
        return self._derive(f, "mapPartitionsWithIndex")

    def mapValues(self, f):
        return self._derive(lambda _, it: ((k, f(v)) for k, v in it), "mapValues")

    def flatMapValues(self, f):
        return self._derive(lambda _, it: ((k, x) for k, v in it for x in f(v)), "flatMapValues")

    def keys(self):
        return self.map(lambda kv: kv[0])

    def values(self):
        return self.map(lambda kv: kv[1])

    def union(self, other):
        return RDD(list(self._iter_partitions()) + list(other._iter_partitions()), self.ctx, "UnionRDD")

    def distinct(self, numPartitions=None):
        return RDD._of([list(dict.fromkeys(self.collect()))], self.ctx)

    def sortBy(self, keyfunc, ascending=True, numPartitions=None):
        return RDD._of([sorted(self.collect(), key=keyfunc, reverse=not ascending)], self.ctx)

    def sortByKey(self, ascending=True, numPartitions=None, keyfunc=lambda x: x):
        return self.sortBy(lambda kv: keyfunc(kv[0]), ascending)

    # Aggregates.
    def reduce(self, f):
        items = self.collect()
        if not items:
            raise ValueError("Can not reduce() empty RDD")
        return functools.reduce(f, items)

    def fold(self, zeroValue, op):
        return functools.reduce(op, self.collect(), zeroValue)

    def sum(self):
        return self.fold(0, operator.add)

    def max(self, key=None):
        return max(self.collect(), key=key)

    def min(self, key=None):
        return min(self.collect(), key=key)

    def top(self, num, key=None):
        return heapq.nlargest(num, self.collect(), key=key)

    def takeOrdered(self, num, key=None):
        return heapq.nsmallest(num, self.collect(), key=key)

    def countByValue(self):
        counts = defaultdict(int)
        for x in self.collect():
            counts[x] += 1
        return counts

    def countByKey(self):
        return self.map(lambda kv: kv[0]).countByValue()

    def collectAsMap(self):
        return dict(self.collect())

    def lookup(self, key):
        return [v for k, v in self.collect() if k == key]

    def zipWithIndex(self):
        return RDD._of([list((x, i) for i, x in enumerate(self.collect()))], self.ctx)

    def keyBy(self, f):
        return self.map(lambda x: (f(x), x))

    def subtract(self, other, numPartitions=None):
        gone = other.collect()
        return self.filter(lambda x: x not in gone)

    def subtractByKey(self, other, numPartitions=None):
        gone = {k for k, _ in other.collect()}
        return self.filter(lambda kv: kv[0] not in gone)

    def intersection(self, other):
        theirs = other.collect()
        return RDD._of([[x for x in dict.fromkeys(self.collect()) if x in theirs]], self.ctx)

    def cartesian(self, other):
        theirs = other.collect()
        return RDD._of([[(a, b) for a in self.collect() for b in theirs]], self.ctx)

    # Partitioning: one local dataset, regrouped as asked.
    def repartition(self, numPartitions):
        items = self.collect()
        n = max(int(numPartitions), 1)
        return RDD._of([items[i::n] for i in range(n)], self.ctx)

    def coalesce(self, numPartitions, shuffle=False):
        return self.repartition(min(max(int(numPartitions), 1), max(self.getNumPartitions(), 1)))

    def partitionBy(self, numPartitions, partitionFunc=None):
        n = max(int(numPartitions), 1)
        f = partitionFunc or portable_hash
        parts = [[] for _ in range(n)]
        for kv in self.collect():
            parts[f(kv[0]) % n].append(kv)
        return RDD._of(parts, self.ctx)

    # By key.
    def combineByKey(self, createCombiner, mergeValue, mergeCombiners, numPartitions=None, partitionFunc=None):
        combined = {}
        for k, v in self.collect():
            combined[k] = mergeValue(combined[k], v) if k in combined else createCombiner(v)
        return RDD._of([list(combined.items())], self.ctx)

    def aggregateByKey(self, zeroValue, seqFunc, combFunc, numPartitions=None, partitionFunc=None):
        import copy

        return self.combineByKey(lambda v: seqFunc(copy.deepcopy(zeroValue), v), seqFunc, combFunc)

    def foldByKey(self, zeroValue, func, numPartitions=None, partitionFunc=None):
        return self.aggregateByKey(zeroValue, func, func)

    def reduceByKey(self, func, numPartitions=None, partitionFunc=None):
        return self.combineByKey(lambda v: v, func, func)

    def groupByKey(self, numPartitions=None, partitionFunc=None):
        groups = defaultdict(list)
        for k, v in self.collect():
            groups[k].append(v)
        return RDD._of([[(k, ResultIterable(vs)) for k, vs in groups.items()]], self.ctx)

    def cogroup(self, other, numPartitions=None):
        groups = {}
        for side, rdd in ((0, self), (1, other)):
            for k, v in rdd.collect():
                groups.setdefault(k, ([], []))[side].append(v)
        return RDD._of([[(k, (ResultIterable(a), ResultIterable(b))) for k, (a, b) in groups.items()]], self.ctx)

    def join(self, other, numPartitions=None):
        return RDD._of([[(k, (x, y)) for k, (a, b) in self.cogroup(other).collect() for x in a for y in b]], self.ctx)

    def leftOuterJoin(self, other, numPartitions=None):
        return RDD._of([[(k, (x, y)) for k, (a, b) in self.cogroup(other).collect() if a.data
                         for x in a for y in (list(b) or [None])]], self.ctx)

    def rightOuterJoin(self, other, numPartitions=None):
        return RDD._of([[(k, (x, y)) for k, (a, b) in self.cogroup(other).collect() if b.data
                         for x in (list(a) or [None]) for y in b]], self.ctx)

    def fullOuterJoin(self, other, numPartitions=None):
        return RDD._of([[(k, (x, y)) for k, (a, b) in self.cogroup(other).collect()
                         for x in (list(a) or [None]) for y in (list(b) or [None])]], self.ctx)

    def __repr__(self):
        return f"{self._lineage}[{id(self)}]"
