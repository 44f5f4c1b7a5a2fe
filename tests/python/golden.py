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
        t0 = seen[0]
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


def golden(name):
    with open(os.path.join(REFERENCE, "golden", name + ".jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def run_case(name):
    build, checkpoint = CASES[name]
    job = Job(name, checkpoint)
    try:
        key = "left" if "left" in job.inputs["streams"] else "lines"
        job.probe = job.stream(key)
        build(job)
        got = job.run()
    finally:
        job.close()
    want = golden(name)
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


def main(names):
    failed = []
    for name in names or list(CASES):
        problems = run_case(name)
        print(f"{name}: {'ok' if not problems else 'DIFFERS'}", flush=True)
        failed += problems
    for p in failed:
        print(p, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
