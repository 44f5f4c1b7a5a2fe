"""``DStream``: PySpark's streaming transformations, planned onto the
engine.

A transformation ships its function at once (so a function that cannot
run in the runner fails here, at the call) and records a node; the graph
is built on the engine when the context starts. Consecutive narrow
transformations (``map``, ``flatMap``, ``filter``, ``mapPartitions``,
``mapValues``, ...) are fused into one runner call per partition and
batch: the values between them never leave the runner.
"""

import operator
from datetime import datetime

from ..._values import dumps
from ..rdd import RDD, portable_hash


def _epoch_ms(t):
    """A time as PySpark's ``slice`` takes it: a datetime or seconds since
    the epoch."""
    if isinstance(t, datetime):
        t = t.timestamp()
    return int(t * 1000)


def _ms(seconds, what="duration"):
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(seconds).__name__}")
    return int(round(seconds * 1000))


class DStream:
    """A stream of batches (PySpark's ``DStream``)."""

    def __init__(self, ssc, plan, slide_ms, shape=None):
        self._ssc = ssc
        # plan(planner) -> the engine stream's id; called once per job.
        self._plan = plan
        self._slide_ms = slide_ms
        # How the engine's lists become PySpark's (see rdd._shaped).
        self._shape = shape
        # A narrow chain not yet given to the engine: (base, steps).
        self._chain = None

    # -- planning ---------------------------------------------------------

    def _id(self, planner):
        return planner.stream(self)

    def _derive(self, kind, args=None, inputs=(), function=None, shape=None, slide_ms=None, stateful=False,
                **functions):
        """A stream made by engine operation ``kind`` of this stream (and
        ``inputs``); ``function`` and the named ``functions`` are shipped
        callables, given as ``(kind, callable)`` pairs."""
        ssc = self._ssc
        shipped = {}
        for field, spec in dict(functions, function=function).items():
            if spec is not None:
                # (kind, callable) or (kind, callable, fields its kind reads)
                fkind, f, *extra = spec
                shipped[field] = (fkind, ssc._ship(f, kind), extra[0] if extra else {})
        parents = (self,) + tuple(inputs)

        ssc._check_not_started()

        def plan(planner):
            if stateful:
                planner.stateful()
            ids = [p._id(planner) for p in parents]
            fields = dict(args or {})
            for field, (fkind, index, extra) in shipped.items():
                fields[field] = planner.function(fkind, index, kind, **extra)
            return planner.op(kind, ids, fields)

        return DStream(ssc, plan, slide_ms or self._slide_ms, shape)

    def _narrow(self, step, f):
        index = self._ssc._ship(f, step) if f is not None else None
        if self._chain is not None:
            base, steps = self._chain
        else:
            base, steps = self, ()
        steps = steps + ((step, index),)

        def plan(planner):
            return planner.op("map_partitions", [base._id(planner)],
                              {"function": planner.chain(steps, base._shape)})

        out = DStream(self._ssc, plan, self._slide_ms)
        out._chain = (base, steps)
        return out

    def _check_window(self, windowDuration, slideDuration):
        parent = self._slide_ms
        if _ms(windowDuration) % parent:
            raise ValueError(
                "windowDuration must be multiple of the parent dstream's slide (batch) duration "
                f"({parent} ms)"
            )
        if slideDuration is not None and _ms(slideDuration) % parent:
            raise ValueError(
                "slideDuration must be multiple of the parent dstream's slide (batch) duration "
                f"({parent} ms)"
            )

    def _partitions(self, numPartitions):
        return numPartitions or self._ssc._sc.defaultParallelism

    # -- narrow -----------------------------------------------------------

    def map(self, f, preservesPartitioning=False):
        return self._narrow("map", f)

    def flatMap(self, f, preservesPartitioning=False):
        return self._narrow("flatMap", f)

    def filter(self, f):
        return self._narrow("filter", f)

    def mapPartitions(self, f, preservesPartitioning=False):
        return self._narrow("mapPartitions", f)

    def mapPartitionsWithIndex(self, f, preservesPartitioning=False):
        return self._narrow("mapPartitionsWithIndex", f)

    def mapValues(self, f):
        return self._narrow("mapValues", f)

    def flatMapValues(self, f):
        return self._narrow("flatMapValues", f)

    # -- per batch --------------------------------------------------------

    def reduce(self, func):
        return self._derive("reduce", function=("reduce", func))

    def count(self):
        return self._derive("count")

    def countByValue(self):
        return self._derive("count_by_value", {"partitions": self._partitions(None)})

    def glom(self):
        return self._derive("glom", shape="glom")

    def repartition(self, numPartitions):
        return self._derive("repartition", {"partitions": numPartitions})

    def union(self, other):
        if other._slide_ms != self._slide_ms:
            raise ValueError("the two DStream should have same slide duration")
        return self._derive("union", inputs=(other,), shape=self._shape)

    def reduceByKey(self, func, numPartitions=None):
        # As PySpark: each partition's values are first combined per key in
        # Python (here fused onto the narrow chain before it, in the
        # runner), so only one pair per key and partition is shuffled.
        local = self._narrow("combineLocally", func)
        return local._derive("reduce_by_key", {"partitions": self._partitions(numPartitions)},
                             function=("reduce", func))

    def groupByKey(self, numPartitions=None):
        return self._derive("group_by_key", {"partitions": self._partitions(numPartitions)}, shape="group")

    def _join(self, kind, other, numPartitions, shape=None):
        return self._derive(kind, {"partitions": self._partitions(numPartitions)}, inputs=(other,), shape=shape)

    def join(self, other, numPartitions=None):
        return self._join("join", other, numPartitions)

    def leftOuterJoin(self, other, numPartitions=None):
        return self._join("left_outer_join", other, numPartitions)

    def rightOuterJoin(self, other, numPartitions=None):
        return self._join("right_outer_join", other, numPartitions)

    def fullOuterJoin(self, other, numPartitions=None):
        return self._join("full_outer_join", other, numPartitions)

    def cogroup(self, other, numPartitions=None):
        return self._join("cogroup", other, numPartitions, shape="cogroup")

    def combineByKey(self, createCombiner, mergeValue, mergeCombiners, numPartitions=None):
        return self._derive(
            "combine_by_key",
            {"partitions": self._partitions(numPartitions)},
            create=("map", createCombiner),
            merge_value=("reduce", mergeValue),
            merge_combiners=("reduce", mergeCombiners),
        )

    def partitionBy(self, numPartitions, partitionFunc=portable_hash):
        """The same pairs in ``numPartitions`` partitions, by key. The
        engine places the keys itself (as its shuffles do): a partitionFunc
        other than ``portable_hash`` is refused rather than ignored."""
        if partitionFunc is not portable_hash:
            raise NotImplementedError(
                f"partitionBy with partitionFunc {getattr(partitionFunc, '__qualname__', partitionFunc)!s}: "
                "Sluice places keys by its own hash; use the default (portable_hash)"
            )
        grouped = self._derive("group_by_key", {"partitions": max(int(numPartitions), 1)})
        return grouped._narrow("ungroup", None)

    def updateStateByKey(self, updateFunc, numPartitions=None, initialRDD=None):
        args = {"partitions": self._partitions(numPartitions)}
        if initialRDD is not None:
            pairs = initialRDD.collect() if isinstance(initialRDD, RDD) else list(initialRDD)
            args["initial"] = [(dumps(k), dumps(v)) for k, v in pairs]
        return self._derive("update_state_by_key", args, function=("update-state", updateFunc), stateful=True)

    # -- whole batches ----------------------------------------------------

    def _transform(self, kind, func, form, time_arity, inputs=()):
        """A stream of ``func``'s result on whole batches, run in the
        runner: PySpark passes the batch time when the function takes
        ``time_arity`` arguments."""
        code = getattr(func, "__code__", None)
        with_time = bool(time_arity) and code is not None and code.co_argcount == time_arity
        shapes = tuple(d._shape for d in (self,) + tuple(inputs))
        extra = {"form": form, "with_time": with_time, "shapes": shapes}
        return self._derive(kind, inputs=inputs, function=("transform", func, extra))

    def transform(self, func):
        """``func(rdd)`` or ``func(time, rdd)`` of every batch, run in the
        runner (it and the RDD operations it calls), over the batch as one
        local dataset; it returns an RDD (or a list)."""
        return self._transform("transform", func, "one", 2)

    def transformWith(self, func, other, keepSerializer=False):
        """``func(rdd_a, rdd_b)`` or ``func(time, rdd_a, rdd_b)`` of this
        stream's and ``other``'s batches, run in the runner."""
        if other._slide_ms != self._slide_ms:
            raise ValueError("the two DStream should have same slide duration")
        return self._transform("transform_with", func, "with", 3, (other,))

    def slice(self, begin, end):
        """The remembered batches with times in ``[begin, end]`` (datetimes
        or seconds since the epoch) as RDDs, oldest first."""
        ssc = self._ssc
        job = ssc._job or ssc._ran
        if job is None:
            raise ValueError(f"{self!r} has not been initialized (start the StreamingContext first)")
        stream = ssc._planned.get(id(self))
        if stream is None:
            raise ValueError(f"{self!r} is not part of the job: no output operation reads it")
        kept = job.slice(stream, _epoch_ms(begin), _epoch_ms(end))
        return [RDD._of_columns(parts, ssc._sc, self._shape) for _, parts in kept]

    # -- windows ----------------------------------------------------------

    def window(self, windowDuration, slideDuration=None):
        self._check_window(windowDuration, slideDuration)
        slide = _ms(slideDuration) if slideDuration is not None else self._slide_ms
        return self._derive("window", {"length_ms": _ms(windowDuration), "slide_ms": slide},
                            slide_ms=slide, shape=self._shape)

    def _incremental(self, invFunc, windowDuration, slideDuration):
        """PySpark takes the inverse path only for windows of at least five
        slides (else it reduces the whole window again)."""
        slide = _ms(slideDuration) if slideDuration is not None else self._slide_ms
        return invFunc is not None and _ms(windowDuration) >= 5 * slide

    def reduceByWindow(self, reduceFunc, invReduceFunc, windowDuration, slideDuration):
        self._check_window(windowDuration, slideDuration)
        slide = _ms(slideDuration)
        inverse = ("inverse-reduce", invReduceFunc) if self._incremental(invReduceFunc, windowDuration, slideDuration) else None
        return self._derive("reduce_by_window", {"length_ms": _ms(windowDuration), "slide_ms": slide},
                            function=("reduce", reduceFunc), inverse=inverse, slide_ms=slide,
                            stateful=invReduceFunc is not None)

    def countByWindow(self, windowDuration, slideDuration):
        return self.map(lambda x: 1).reduceByWindow(operator.add, operator.sub, windowDuration, slideDuration)

    def reduceByKeyAndWindow(self, func, invFunc, windowDuration, slideDuration=None, numPartitions=None,
                             filterFunc=None):
        self._check_window(windowDuration, slideDuration)
        slide = _ms(slideDuration) if slideDuration is not None else self._slide_ms
        incremental = self._incremental(invFunc, windowDuration, slideDuration)
        # As PySpark: filterFunc only with an invFunc (on either path).
        keep = filterFunc if invFunc is not None else None
        return self._derive(
            "reduce_by_key_and_window",
            {"length_ms": _ms(windowDuration), "slide_ms": slide, "partitions": self._partitions(numPartitions)},
            function=("reduce", func),
            inverse=("inverse-reduce", invFunc) if incremental else None,
            filter=("filter", keep) if keep is not None else None,
            slide_ms=slide,
            stateful=invFunc is not None,
        )

    def countByValueAndWindow(self, windowDuration, slideDuration, numPartitions=None):
        keyed = self.map(lambda x: (x, 1))
        counted = keyed.reduceByKeyAndWindow(operator.add, operator.sub, windowDuration, slideDuration,
                                             numPartitions)
        return counted.filter(lambda x: x[1] > 0)

    def groupByKeyAndWindow(self, windowDuration, slideDuration, numPartitions=None):
        self._check_window(windowDuration, slideDuration)
        slide = _ms(slideDuration)
        return self._derive(
            "group_by_key_and_window",
            {"length_ms": _ms(windowDuration), "slide_ms": slide, "partitions": self._partitions(numPartitions)},
            slide_ms=slide,
            shape="group",
        )

    # -- outputs ----------------------------------------------------------

    def foreachRDD(self, func):
        """Calls ``func(rdd)`` or ``func(time, rdd)`` here, on the driver,
        with every batch."""
        code = getattr(func, "__code__", None)
        name = f"foreachRDD {getattr(func, '__qualname__', func)!s}"
        if code is not None:
            name += f" ({code.co_filename}:{code.co_firstlineno})"
        if code is not None and code.co_argcount == 1:
            user = func

            def func(_, rdd):  # noqa: F811 - PySpark's own wrapping
                return user(rdd)

        ssc, shape = self._ssc, self._shape

        def callback(time_ms, columns):
            rdd = RDD._of_columns(columns, ssc._sc, shape)
            func(datetime.fromtimestamp(time_ms / 1000.0), rdd)

        ssc._add_output(self, "foreach", (name, callback))

    def pprint(self, num=10):
        """Prints the first ``num`` elements of every batch, as PySpark."""

        def takeAndPrint(time, rdd):
            taken = rdd.take(num + 1)
            print("-------------------------------------------")
            print("Time: %s" % time)
            print("-------------------------------------------")
            for record in taken[:num]:
                print(record)
            if len(taken) > num:
                print("...")
            print("", flush=True)

        self.foreachRDD(takeAndPrint)

    def saveAsTextFiles(self, prefix, suffix=None):
        """A directory ``prefix-TIME_IN_MS[.suffix]`` per batch, a line per
        element: ``str(element)``."""
        texts = self.map(str)
        self._ssc._add_output(texts, "save_text", (prefix, suffix))

    # -- no-ops PySpark has -----------------------------------------------

    def cache(self):
        return self

    def persist(self, storageLevel=None):
        return self

    def checkpoint(self, interval):
        return self

    def context(self):
        return self._ssc
