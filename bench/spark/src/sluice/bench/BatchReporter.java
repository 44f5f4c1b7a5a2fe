// Prints each completed batch of a Spark streaming job as one JSON line on
// stdout, for Sluice's benchmark (`scripts/bench`). A JVM listener, so that
// PySpark jobs report without a Python callback per batch.
package sluice.bench;

import org.apache.spark.streaming.scheduler.BatchInfo;
import org.apache.spark.streaming.scheduler.StreamingListener;
import org.apache.spark.streaming.scheduler.StreamingListenerBatchCompleted;

public final class BatchReporter implements StreamingListener {
    @Override
    public void onBatchCompleted(StreamingListenerBatchCompleted completed) {
        BatchInfo info = completed.batchInfo();
        System.out.println(String.format(
                "{\"time\": %d, \"records\": %d, \"scheduling_ms\": %d, \"processing_ms\": %d}",
                info.batchTime().milliseconds(),
                info.numRecords(),
                (Long) info.schedulingDelay().get(),
                (Long) info.processingDelay().get()));
        System.out.flush();
    }
}
