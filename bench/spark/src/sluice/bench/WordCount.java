// Spark Streaming's socket word count on the JVM (Java API), for Sluice's
// benchmark (`scripts/bench`): the same job as Sluice's (split on spaces,
// pair with 1, reduceByKey, then an action that computes every count),
// reporting each completed batch as one JSON line on stdout.
//
//     spark-submit --class sluice.bench.WordCount wordcount.jar HOST PORT INTERVAL_MS SECONDS
package sluice.bench;

import java.util.Arrays;
import org.apache.spark.SparkConf;
import org.apache.spark.streaming.Durations;
import org.apache.spark.streaming.api.java.JavaPairDStream;
import org.apache.spark.streaming.api.java.JavaStreamingContext;
import scala.Tuple2;

public final class WordCount {
    public static void main(String[] args) throws Exception {
        String host = args[0];
        int port = Integer.parseInt(args[1]);
        long intervalMs = Long.parseLong(args[2]);
        long timeoutMs = (long) (Double.parseDouble(args[3]) * 1000);
        SparkConf conf = new SparkConf()
                .setMaster(System.getenv().getOrDefault("BENCH_SPARK_MASTER", "local[2]"))
                .setAppName("sluice-bench-wordcount-jvm")
                .set("spark.ui.enabled", "false");
        JavaStreamingContext ssc = new JavaStreamingContext(conf, Durations.milliseconds(intervalMs));
        ssc.sparkContext().setLogLevel("ERROR");
        ssc.addStreamingListener(new BatchReporter());
        JavaPairDStream<String, Integer> counts = ssc.socketTextStream(host, port)
                .flatMap(line -> Arrays.asList(line.split(" ", -1)).iterator())
                .mapToPair(word -> new Tuple2<>(word, 1))
                .reduceByKey(Integer::sum);
        counts.foreachRDD(rdd -> {
            rdd.count();
        });
        System.out.println("{\"started\": true}");
        System.out.flush();
        ssc.start();
        ssc.awaitTerminationOrTimeout(timeoutMs);
        ssc.stop(true, false);
    }
}
