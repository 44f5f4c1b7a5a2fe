"""The seed's socket word count through sluice.pyspark, for Sluice's
benchmark (`scripts/bench`): bench/spark/wordcount.py with only its imports
changed, every lambda running in the wasm runner. Each completed batch is
reported as one JSON line on stdout by a StreamingListener, and the first
line says when `start()` was called, for the time to the first batch.

    python wordcount.py HOST PORT INTERVAL_MS SECONDS
"""

import json
import os
import sys
import time

from sluice.pyspark import SparkConf, SparkContext
from sluice.pyspark.streaming import StreamingContext
from sluice.pyspark.streaming.listener import StreamingListener


class Reporter(StreamingListener):
    def onBatchCompleted(self, batchCompleted):
        info = batchCompleted.batchInfo()
        print(
            json.dumps(
                {
                    "time": info.batchTime().milliseconds(),
                    "records": info.numRecords(),
                    "scheduling_ms": info.schedulingDelay(),
                    "processing_ms": info.processingDelay(),
                    "done_ms": int(time.time() * 1000),
                }
            ),
            flush=True,
        )


def main():
    host, port, interval_ms, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    conf = SparkConf().setMaster(os.environ.get("BENCH_SPARK_MASTER", "local[2]")).setAppName("sluice-bench-wordcount-py")
    sc = SparkContext(conf=conf)
    ssc = StreamingContext(sc, interval_ms / 1000.0)
    ssc.addStreamingListener(Reporter())
    counts = (
        ssc.socketTextStream(host, port)
        .flatMap(lambda line: line.split(" "))
        .map(lambda word: (word, 1))
        .reduceByKey(lambda a, b: a + b)
    )

    def compute(rdd):
        rdd.count()

    counts.foreachRDD(compute)
    print(json.dumps({"started": True, "start_ms": int(time.time() * 1000)}), flush=True)
    ssc.start()
    ssc.awaitTerminationOrTimeout(seconds)
    ssc.stop(stopSparkContext=True, stopGraceFully=False)


if __name__ == "__main__":
    main()
