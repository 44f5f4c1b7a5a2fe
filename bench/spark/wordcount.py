"""Spark Streaming's socket word count on PySpark DStreams, for Sluice's
benchmark (`scripts/bench`): the same job as Sluice's (split on spaces, pair
with 1, reduceByKey, then an action that computes every count), each
completed batch reported as one JSON line on stdout by the benchmark jar's
JVM listener (`sluice.bench.BatchReporter`: no Python callback per batch).

    spark-submit --jars wordcount.jar wordcount.py HOST PORT INTERVAL_MS SECONDS
"""

import json
import os
import sys

from pyspark import SparkConf, SparkContext
from pyspark.streaming import StreamingContext


def main():
    host, port, interval_ms, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    conf = (
        SparkConf()
        .setMaster(os.environ.get("BENCH_SPARK_MASTER", "local[2]"))
        .setAppName("sluice-bench-wordcount-py")
        .set("spark.ui.enabled", "false")
        .set("spark.driver.memory", "4g")
    )
    sc = SparkContext(conf=conf)
    sc.setLogLevel("ERROR")
    ssc = StreamingContext(sc, interval_ms / 1000.0)
    # The JVM listener of the benchmark's jar (spark-submit --jars): no
    # Python callback per batch.
    ssc._jssc.addStreamingListener(sc._jvm.sluice.bench.BatchReporter())
    counts = (
        ssc.socketTextStream(host, port)
        .flatMap(lambda line: line.split(" "))
        .map(lambda word: (word, 1))
        .reduceByKey(lambda a, b: a + b)
    )

    def compute(rdd):
        rdd.count()  # returns nothing: a function that returns a value must return an RDD

    counts.foreachRDD(compute)
    print(json.dumps({"started": True}), flush=True)
    ssc.start()
    ssc.awaitTerminationOrTimeout(seconds)
    ssc.stop(stopSparkContext=True, stopGraceFully=False)


if __name__ == "__main__":
    main()
