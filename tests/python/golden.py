"""The golden DStream jobs through ``sluice.pyspark``: each is the PySpark
program Spark 3.5 was recorded running (``tests/reference/inputs`` in,
``tests/reference/golden`` out), with only its imports changed, and its
per-batch records must equal Spark's.

Run: ``python tests/python/golden.py [CASE ...]`` (every case by default);
it exits non-zero naming each case and batch that differs.

Batches run back to back on Spark's test clock
(``spark.streaming.clock=org.apache.spark.util.ManualClock``), so a case of
15 batches takes well under a second of batch time.
"""

import json
import os
import shutil
import sys
import tempfile
import threading
from datetime import datetime

from sluice.pyspark import SparkConf, SparkContext
from sluice.pyspark.resultiterable import ResultIterable
from sluice.pyspark.streaming import StreamingContext

# Spark's recording: tests/reference, or $SLUICE_REFERENCE (another recording).
REFERENCE = os.environ.get("SLUICE_REFERENCE") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "reference"
)


def canon(x):
    """A record as the golden files hold it: tuples as lists, iterables
    (cogroup, groupByKey) as sorted lists."""
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, (tuple, list)):
        return [canon(e) for e in x]
    if isinstance(x, dict):
        return {str(k): canon(v) for k, v in x.items()}
    if isinstance(x, ResultIterable) or hasattr(x, "__iter__"):
        return sorted((canon(e) for e in x), key=sort_key)
    return repr(x)


def sort_key(r):
    return json.dumps(r, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


class Job:
    """One golden case: its input streams, collected outputs, and a run of
    exactly as many batches as its input has."""

    def __init__(self, name, checkpoint=False):
        self.name = name
        with open(os.path.join(REFERENCE, "inputs", name + ".json"), encoding="utf-8") as f:
            self.inputs = json.load(f)
        conf = SparkConf().set("spark.streaming.clock", "org.apache.spark.util.ManualClock")
        self.sc = SparkContext("local[2]", "golden-" + name, conf=conf)
        self.ssc = StreamingContext(self.sc, 1)
        self.tmp = tempfile.mkdtemp(prefix=f"sluice-golden-{name}-")
        if checkpoint:
            self.ssc.checkpoint(os.path.join(self.tmp, "checkpoint"))
        self.batches = 0
        self.outputs = []
        self.lock = threading.Lock()

    def stream(self, key="lines"):
        batches = self.inputs["streams"][key]
        parts = self.inputs.get("partitions", 2)
        self.batches = max(self.batches, len(batches))
        rdds = [self.sc.parallelize(b, parts) for b in batches]
        return self.ssc.queueStream(rdds, oneAtATime=True, default=self.sc.parallelize([], parts))

    def collect(self, dstream, extra=None):
        entries = []
        self.outputs.append(entries)

        def sink(t, rdd):
            raw = rdd.collect()
            e = {"t": t, "records": sorted((canon(x) for x in raw), key=sort_key)}
            if extra:
                e.update(extra(rdd))
            with self.lock:
                entries.append(e)

        dstream.foreachRDD(sink)

    def run(self):
        """Runs the job's batches; returns its golden lines."""
        done = threading.Event()
        seen = []

        def count(t, rdd):
            seen.append(t)
            if len(seen) >= self.batches:
                done.set()

        # The probe: an output on the first input at every batch time.
        self.probe.foreachRDD(count)
        self.ssc.start()
        if not done.wait(120):
            raise AssertionError(f"{self.name}: {len(seen)} of {self.batches} batches in 120 s")
        self.ssc.stop(stopSparkContext=True, stopGraceFully=False)
        t0 = self.first = seen[0]
        lines = []
        for entries in self.outputs:
            for e in sorted(entries, key=lambda e: e["t"]):
                index = round((e["t"] - t0).total_seconds())
                if index >= self.batches:
                    continue
                row = {"batch": index}
                row.update({k: v for k, v in e.items() if k != "t"})
                lines.append(row)
        return lines

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


def words(line):
    """The seed's tokenizer: split on single spaces."""
    return line.split(" ")


def case_flatMap(job):
    job.collect(job.probe.flatMap(lambda l: l.split(" ")))


def case_map(job):
    job.collect(job.probe.map(lambda l: l.upper()))


def case_filter(job):
    job.collect(job.probe.flatMap(lambda l: l.split(" ")).filter(lambda w: len(w) >= 4))


def case_count(job):
    job.collect(job.probe.flatMap(lambda l: l.split(" ")).count())


def case_countByValue(job):
    job.collect(job.probe.flatMap(lambda l: l.split(" ")).countByValue())


def case_reduce(job):
    job.collect(job.probe.flatMap(lambda l: l.split(" ")).map(lambda w: len(w)).reduce(lambda a, b: a + b))


def case_reduceByKey(job):
    counts = job.probe.flatMap(words).map(lambda w: (w, 1)).reduceByKey(lambda a, b: a + b, 3)
    job.collect(counts, extra=lambda rdd: {"partitions": rdd.getNumPartitions()})


def case_window_3_1(job):
    job.collect(job.probe.flatMap(lambda l: l.split(" ")).window(3, 1))


def case_countByWindow_5_1(job):
    job.collect(job.probe.flatMap(lambda l: l.split(" ")).countByWindow(5, 1))


def case_reduceByKeyAndWindow_inv_5_1(job):
    pairs = job.probe.flatMap(lambda l: l.split(" ")).map(lambda w: (w, 1))
    job.collect(pairs.reduceByKeyAndWindow(lambda a, b: a + b, lambda a, b: a - b, 5, 1))


def case_updateStateByKey(job):
    pairs = job.probe.flatMap(lambda l: l.split(" ")).map(lambda w: (w, 1))
    job.collect(pairs.updateStateByKey(lambda vs, st: sum(vs) + (st or 0)))


def _two(job):
    left = job.probe
    right = job.stream("right")
    return left, right


def case_union(job):
    left, right = _two(job)
    job.collect(left.union(right).flatMap(lambda l: l.split(" ")))


def case_join(job):
    left, right = _two(job)
    left = left.flatMap(lambda l: [(w, "L:" + l) for w in l.split(" ")])
    right = right.flatMap(lambda l: [(w, "R:" + l) for w in l.split(" ")])
    job.collect(left.join(right))


def case_cogroup(job):
    left, right = _two(job)
    left = left.flatMap(lambda l: [(w, "L:" + l) for w in l.split(" ")])
    right = right.flatMap(lambda l: [(w, "R:" + l) for w in l.split(" ")])
    job.collect(left.cogroup(right))


CASES = {
    "flatMap": (case_flatMap, False),
    "map": (case_map, False),
    "filter": (case_filter, False),
    "count": (case_count, False),
    "countByValue": (case_countByValue, False),
    "reduce": (case_reduce, False),
    "reduceByKey": (case_reduceByKey, False),
    "window_3_1": (case_window_3_1, False),
    "countByWindow_5_1": (case_countByWindow_5_1, True),
    "reduceByKeyAndWindow_inv_5_1": (case_reduceByKeyAndWindow_inv_5_1, True),
    "updateStateByKey": (case_updateStateByKey, True),
    "union": (case_union, False),
    "join": (case_join, False),
    "cogroup": (case_cogroup, False),
}


# Jobs without a recording of their own, whose output follows from a
# recorded one or from the input, as Spark's semantics say: (build,
# checkpoint, input, expected lines from the input's streams).


def _counts(lines):
    out = {}
    for line in lines:
        for w in line.split(" "):
            out[w] = out.get(w, 0) + 1
    return out


def _rows(per_batch, extra=None):
    return [dict({"batch": i, "records": sorted((canon(r) for r in recs), key=sort_key)}, **(extra or {}))
            for i, recs in enumerate(per_batch)]


def case_combineByKey(job):
    pairs = job.probe.flatMap(lambda l: l.split(" ")).map(lambda w: (w, 1))
    job.collect(pairs.combineByKey(lambda v: (v, 1), lambda c, v: (c[0] + v, c[1] + 1),
                                   lambda a, b: (a[0] + b[0], a[1] + b[1]), 3))


def want_combineByKey(streams):
    return _rows([[(w, (n, n)) for w, n in _counts(b).items()] for b in streams["lines"]])


def case_transform(job):
    counts = job.probe.flatMap(words).map(lambda w: (w, 1)).reduceByKey(lambda a, b: a + b, 3)
    top = counts.transform(lambda rdd: rdd.sortBy(lambda kv: (-kv[1], kv[0])).zipWithIndex()
                           .filter(lambda x: x[1] < 3).keys())
    job.collect(top)
    # The two-argument form gets the batch time.
    job.collect(counts.transform(lambda t, rdd: rdd.map(lambda kv: (kv[0], t.year >= 1970))))


def want_transform(streams):
    top = [sorted(_counts(b).items(), key=lambda kv: (-kv[1], kv[0]))[:3] for b in streams["lines"]]
    timed = [[(w, True) for w in _counts(b)] for b in streams["lines"]]
    return _rows(top) + _rows(timed)


def case_transformWith(job):
    left, right = _two(job)
    lc = left.flatMap(words).map(lambda w: (w, 1)).reduceByKey(lambda a, b: a + b)
    rc = right.flatMap(words).map(lambda w: (w, 1)).reduceByKey(lambda a, b: a + b)
    job.collect(lc.transformWith(lambda a, b: a.subtractByKey(b), rc))
    job.collect(lc.transformWith(lambda t, a, b: a.join(b).mapValues(lambda v: v[0] * v[1]), rc))


def want_transformWith(streams):
    n = max(len(streams["left"]), len(streams["right"]))
    side = [[_counts(s[i]) if i < len(s) else {} for i in range(n)] for s in (streams["left"], streams["right"])]
    only = [[(w, c) for w, c in a.items() if w not in b] for a, b in zip(*side)]
    both = [[(w, c * b[w]) for w, c in a.items() if w in b] for a, b in zip(*side)]
    return _rows(only) + _rows(both)


def case_partitionBy(job):
    pairs = job.probe.flatMap(words).map(lambda w: (w, 1))
    job.collect(pairs.partitionBy(3), extra=lambda rdd: {"partitions": rdd.getNumPartitions()})


def want_partitionBy(streams):
    return _rows([[(w, 1) for line in b for w in words(line)] for b in streams["lines"]], {"partitions": 3})


def case_updateStateByKey_initial(job):
    pairs = job.probe.flatMap(words).map(lambda w: (w, 1))
    first = job.inputs["streams"]["lines"][0][0].split(" ")[0]
    initial = job.sc.parallelize([(first, 100), ("ζ initial", 5)])
    job.collect(pairs.updateStateByKey(lambda vs, st: sum(vs) + (st or 0), initialRDD=initial))


def want_updateStateByKey_initial(streams):
    batches = streams["lines"]
    state = {batches[0][0].split(" ")[0]: 100, "ζ initial": 5}
    out = []
    for b in batches:
        for w, n in _counts(b).items():
            state[w] = state.get(w, 0) + n
        out.append(list(state.items()))
    return _rows(out)


def case_transform_streams(job):
    left, right = _two(job)
    both = job.ssc.transform([left, right], lambda rdds: rdds[0].union(rdds[1]))
    job.collect(both.flatMap(lambda l: l.split(" ")))


DERIVED = {
    # StreamingContext.transform of both streams, as their union: union's output.
    "transform_streams": (case_transform_streams, False, "union", lambda streams: golden("union")),
    "combineByKey": (case_combineByKey, False, "reduceByKey", want_combineByKey),
    "transform": (case_transform, False, "reduceByKey", want_transform),
    "transformWith": (case_transformWith, False, "join", want_transformWith),
    "partitionBy": (case_partitionBy, False, "reduceByKey", want_partitionBy),
    "updateStateByKey_initial": (case_updateStateByKey_initial, True, "updateStateByKey",
                                 want_updateStateByKey_initial),
}


def golden(name):
    with open(os.path.join(REFERENCE, "golden", name + ".jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def run_case(name):
    if name in DERIVED:
        build, checkpoint, source, expect = DERIVED[name]
    else:
        (build, checkpoint), source, expect = CASES[name], name, None
    job = Job(source, checkpoint)
    try:
        key = "left" if "left" in job.inputs["streams"] else "lines"
        job.probe = job.stream(key)
        build(job)
        got = job.run()
    finally:
        job.close()
    want = expect(job.inputs["streams"]) if expect else golden(name)
    problems = []
    by_batch = {}
    for row in want:
        by_batch.setdefault(row["batch"], []).append(row)
    got_by_batch = {}
    for row in got:
        got_by_batch.setdefault(row["batch"], []).append(row)
    for batch in sorted(set(by_batch) | set(got_by_batch)):
        w, g = by_batch.get(batch), got_by_batch.get(batch)
        if w != g:
            problems.append(f"{name} batch {batch}:\n  spark:  {json.dumps(w, ensure_ascii=False)}\n"
                            f"  sluice: {json.dumps(g, ensure_ascii=False)}")
    return problems


def check_slice():
    """``slice(begin, end)`` after a run with ``remember(60)``: the batches
    in ``[begin, end]``, bounds floored onto the grid, none at or before the
    zero time (one interval before the first batch), none when begin > end."""
    job = Job("flatMap")
    try:
        job.probe = job.stream("lines")
        ws = job.probe.flatMap(words)
        ws.foreachRDD(lambda rdd: None)
        job.ssc.remember(60)
        job.run()
        t0 = job.first.timestamp()
        batches = [[w for line in b for w in words(line)] for b in job.inputs["streams"]["lines"]]
        problems = []
        for begin, end, want in [
            (t0 + 1, t0 + 3, batches[1:4]),
            (t0 + 1.5, t0 + 4.5, batches[1:5]),
            (t0 - 4, t0, batches[:1]),
            (datetime.fromtimestamp(t0 + 2), datetime.fromtimestamp(t0 + 2), batches[2:3]),
            (t0 + 3, t0 + 1, []),
        ]:
            got = [sorted(rdd.collect()) for rdd in ws.slice(begin, end)]
            if got != [sorted(b) for b in want]:
                problems.append(f"slice({begin!r}, {end!r}), the first batch at {t0}: {got}, not {want}")
        return problems
    finally:
        job.close()


def check_saveAsTextFiles():
    """``saveAsTextFiles``: per batch, also empty ones, a directory
    ``prefix-TIME[.suffix]`` with Hadoop's files (parts, ``_SUCCESS``, their
    ``.crc``), each line ``str(record)``. Which part holds a line depends on
    partitioning, so the lines are compared across the parts."""
    job = Job("saveAsTextFiles")
    try:
        job.probe = job.stream("lines")
        base = os.path.join(job.tmp, "out")
        ws = job.probe.flatMap(words)
        ws.saveAsTextFiles(base + "/words")
        ws.map(lambda w: (w, 1)).reduceByKey(lambda a, b: a + b, 2).saveAsTextFiles(base + "/counts", "txt")
        job.run()
        t0 = int(job.first.timestamp() * 1000)
        got = {}
        for name in sorted(os.listdir(base)):
            prefix, rest = name.split("-", 1)
            ms, _, suffix = rest.partition(".")
            index = (int(ms) - t0) // 1000
            if index >= job.batches:
                continue
            d = os.path.join(base, name)
            files = sorted(os.listdir(d))
            lines = []
            for f in files:
                if f.startswith("part-"):
                    with open(os.path.join(d, f), encoding="utf-8") as fh:
                        lines += fh.read().splitlines()
            got[(prefix, index)] = (prefix + "-<batch_time_ms>" + ("." + suffix if suffix else ""), files, sorted(lines))
        problems = []
        for row in golden("saveAsTextFiles"):
            key = (row["output"], row["batch"])
            lines = sorted(line for text in row["part_contents"].values() for line in text.splitlines())
            want = (row["dir"], row["files"], lines)
            if got.get(key) != want:
                problems.append(f"saveAsTextFiles {key}:\n  spark:  {want}\n  sluice: {got.get(key)}")
        return problems
    finally:
        job.close()


def check_errors():
    """The misconfigurations of ``golden/errors.jsonl`` that a Python
    program can make: the same error, at the same moment (``build``: the
    transformation call; ``start``; ``after-start``), or accepted."""
    from operator import add, sub

    def context(checkpoint=False):
        conf = SparkConf().set("spark.streaming.clock", "org.apache.spark.util.ManualClock")
        sc = SparkContext("local[2]", "errors", conf=conf)
        ssc = StreamingContext(sc, 1)
        if checkpoint:
            ssc.checkpoint(tempfile.mkdtemp(prefix="sluice-errors-"))
        lines = ssc.queueStream([sc.parallelize(["a b", "b"], 2)])
        return ssc, lines, lines.flatMap(words).map(lambda w: (w, 1))

    def out(d):
        d.foreachRDD(lambda rdd: None)

    builders = {
        "updateStateByKey without checkpoint dir": lambda p: out(p.updateStateByKey(lambda vs, s: sum(vs))),
        "reduceByKeyAndWindow(add, sub, 3, 1) without checkpoint dir": lambda p: out(p.reduceByKeyAndWindow(add, sub, 3, 1)),
        "countByWindow(3, 1) without checkpoint dir": lambda p: out(p.countByWindow(3, 1)),
        "countByValueAndWindow(3, 1) without checkpoint dir": lambda p: out(p.countByValueAndWindow(3, 1)),
        "reduceByKeyAndWindow(add, None, 3, 1) without checkpoint dir (no inverse)": lambda p: out(p.reduceByKeyAndWindow(add, None, 3, 1)),
        "python window(3.5, 1): window not a multiple of batch": lambda p: out(p.window(3.5, 1)),
        "python window(3, 1.5): slide not a multiple of batch": lambda p: out(p.window(3, 1.5)),
        "python reduceByKeyAndWindow(add, sub, 3, 1.5)": lambda p: out(p.reduceByKeyAndWindow(add, sub, 3, 1.5)),
        "python window(1, 2): slide larger than window": lambda p: out(p.window(1, 2)),
        "start with no output operation": lambda p: None,
    }
    after_start = {
        "add output op after start": lambda ssc, p: out(p),
        "start twice": lambda ssc, p: ssc.start(),
        "start after stop": lambda ssc, p: (ssc.stop(False), ssc.start()),
    }
    problems = []
    for row in golden("errors"):
        case = row["case"]
        if case.startswith("jvm "):
            continue  # the Scala API's checks, which the TOML spec and the library follow
        if case not in builders and case not in after_start:
            problems.append(f"errors: no Python program for the case {case!r}")
            continue
        ssc, _, pairs = context()
        moment, error = None, None
        try:
            moment = "build"
            if case in builders:
                builders[case](pairs)
            else:
                out(pairs)
            moment = "start"
            ssc.start()
            if case in after_start:
                moment = "after-start"
                after_start[case](ssc, pairs)
        except Exception as e:
            error = e
        finally:
            ssc.stop(stopSparkContext=True)
        if row.get("accepted"):
            if error is not None:
                problems.append(f"errors: {case}: refused at {moment} ({error}), Spark accepts it")
        elif error is None:
            problems.append(f"errors: {case}: accepted, Spark refuses it at {row['when']}: {row['message']}")
        elif moment != row["when"] or str(error) != row["message"]:
            problems.append(f"errors: {case}: at {moment}: {error!s}\n  spark, at {row['when']}: {row['message']}")
    return problems


def check_values():
    """Elements are Python values end to end: through the engine and the
    runner (a map, a shuffle, a window) they come back equal and of the
    same types — tuples as tuples, ints of any size, floats, bytes, None,
    sets, dicts, non-ASCII and control characters."""
    values = [
        ("plain", 1), ("café ☕", -7), ("tab\tnew\nline", 2**70), ("big", -(2**100) + 1),
        ("float", 0.1), ("inf", float("inf")), ("nested", ((1, [2, (3,)]), {"k": (None, True)})),
        ("bytes", b"\x00\xff"), ("set", frozenset({1, 2})), ("emoji 🙂", {3, 4}), ("none", None),
    ]
    conf = SparkConf().set("spark.streaming.clock", "org.apache.spark.util.ManualClock")
    sc = SparkContext("local[2]", "values", conf=conf)
    ssc = StreamingContext(sc, 1)
    ssc.checkpoint(tempfile.mkdtemp(prefix="sluice-values-"))
    stream = ssc.queueStream([sc.parallelize(values, 2)])
    got = {"map": [], "shuffle": [], "window": [], "big sums": []}
    done = threading.Event()

    def keep(name):
        def sink(rdd):
            got[name].extend(rdd.collect())
            if all(got.values()):
                done.set()
        return sink

    stream.map(lambda kv: (kv[0], kv[1])).foreachRDD(keep("map"))
    stream.groupByKey().mapValues(lambda vs: list(vs)[0]).foreachRDD(keep("shuffle"))
    stream.window(2, 1).filter(lambda kv: kv[0] != "inf").foreachRDD(keep("window"))
    big = stream.filter(lambda kv: isinstance(kv[1], int)).map(lambda kv: ("sum", kv[1] * 3))
    big.reduceByKey(lambda a, b: a + b).foreachRDD(keep("big sums"))
    ssc.start()
    done.wait(60)
    ssc.stop()
    problems = []

    def typed(x):
        if isinstance(x, (tuple, list)):
            return (type(x).__name__, [typed(e) for e in x])
        if isinstance(x, dict):
            return ("dict", sorted((repr(k), typed(v)) for k, v in x.items()))
        return (type(x).__name__, repr(x))

    want = sorted(map(typed, values))
    for name in ("map", "shuffle"):
        if sorted(map(typed, got[name])) != want:
            problems.append(f"values through {name}: {got[name]}, not {values}")
    if sorted(map(typed, got["window"])) != sorted(typed(v) for v in values if v[0] != "inf"):
        problems.append(f"values through a window: {got['window']}")
    total = 3 * sum(v for _, v in values if isinstance(v, int))
    if got["big sums"][:1] != [("sum", total)]:
        problems.append(f"big ints summed: {got['big sums']}, not {[('sum', total)]}")
    return problems


CHECKS = {"slice": lambda: check_slice(), "saveAsTextFiles": lambda: check_saveAsTextFiles(),
          "errors": lambda: check_errors(), "values": lambda: check_values()}


def main(names):
    failed = []
    for name in names or list(CASES) + list(DERIVED) + list(CHECKS):
        problems = CHECKS[name]() if name in CHECKS else run_case(name)
        print(f"{name}: {'ok' if not problems else 'DIFFERS'}", flush=True)
        failed += problems
    for p in failed:
        print(p, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
