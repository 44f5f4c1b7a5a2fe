//! Metrics of a running job: what Spark's Streaming tab shows (input rate,
//! scheduling delay, processing time, total delay per batch) plus the time
//! and records of every operator, kept for the recent batches and as
//! running totals. [`Metrics::listener`] fills it from the engine's batch
//! listener; the web UI and the Prometheus endpoint ([`crate::web`]) read it.

mod prometheus;

use indexmap::IndexMap;
use serde::Serialize;
use sluice::graph::{BatchInfo, StreamingListener};
use sluice::time::BatchTime;
use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// How many recent batches are kept.
pub const RECENT: usize = 1000;

/// Upper bounds (seconds) of the Prometheus histogram buckets of batch times.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One batch as the UI shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BatchRow {
    /// Batch time (ms since the epoch).
    pub time: i64,
    /// Batch number.
    pub index: u64,
    /// Input records from all sources.
    pub records: u64,
    /// Records per second of batch interval.
    pub rate: f64,
    /// Milliseconds.
    pub scheduling_delay_ms: f64,
    /// Milliseconds.
    pub processing_ms: f64,
    /// Milliseconds.
    pub total_delay_ms: f64,
    /// The receiving rate limit in force (records/s), if any.
    pub rate_limit: Option<f64>,
    /// Per operator: (stream, milliseconds, records out).
    pub operators: Vec<(String, f64, u64)>,
}

/// Running totals of one operator.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OperatorTotals {
    /// The stream (or `output N`).
    pub stream: String,
    /// What it is (`flat_map wordcount.split`).
    pub op: String,
    /// Batches it ran in.
    pub batches: u64,
    /// Seconds spent.
    pub seconds: f64,
    /// Records it produced.
    pub records_out: u64,
}

/// Running totals of one stage of the plan.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageTotals {
    /// The stage's number in the plan (`sluice explain`).
    pub stage: usize,
    /// Its streams, in order.
    pub streams: String,
    /// Tasks per batch, as planned (`null`: decided by a user function).
    pub tasks: Option<usize>,
    /// Batches it ran in.
    pub batches: u64,
    /// Seconds spent in its operators and outputs.
    pub seconds: f64,
    /// Records it passed on to the next stage or to outputs.
    pub records_out: u64,
}

#[derive(Debug, Default)]
struct Inner {
    recent: VecDeque<BatchRow>,
    batches: u64,
    input_records: u64,
    processing: Histogram,
    scheduling: Histogram,
    total_delay: Histogram,
    /// By stream, in the order the graph computes them.
    operators: IndexMap<String, OperatorTotals>,
    /// By stage number.
    stages: std::collections::BTreeMap<usize, StageTotals>,
    receiver_errors: u64,
    /// The latest lag of each source partition: (source, partition) →
    /// records not yet read.
    lag: std::collections::BTreeMap<(String, String), u64>,
    /// The latest receiver errors: (batch time, source, message).
    recent_errors: VecDeque<(i64, String, String)>,
    /// The batch being processed now.
    current: Option<i64>,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// The metrics of one job.
#[derive(Debug)]
pub struct Metrics {
    job: String,
    interval_ms: i64,
    inner: Mutex<Inner>,
    /// Plugins whose call counters and guest logs are shown.
    plugins: Mutex<Vec<Arc<sluice::plugin::Plugin>>>,
    /// The job graph, one line per stream.
    graph: Mutex<Vec<String>>,
}

/// One plugin function's counters, as the page and `/metrics` show them.
#[derive(Debug, Clone, Serialize)]
struct FunctionRow {
    plugin: String,
    version: String,
    function: String,
    kind: String,
    calls: u64,
    seconds: f64,
    traps: u64,
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(std::sync::atomic::Ordering::Relaxed)
}

/// The listener [`Metrics::listener`] returns.
struct Recorder(Arc<Metrics>);

impl StreamingListener for Recorder {
    fn on_batch_started(&mut self, time: BatchTime, _index: u64) {
        self.0.lock().current = Some(time.millis());
    }

    fn on_batch_completed(&mut self, info: &BatchInfo) {
        self.0.record(info);
    }

    fn on_receiver_error(&mut self, source: &str, message: &str) {
        self.0.receiver_error(source, message);
    }
}

impl Metrics {
    /// Empty metrics for job `job` with batches every `interval_ms`.
    pub fn new(job: &str, interval_ms: i64) -> Arc<Metrics> {
        Arc::new(Metrics {
            job: job.to_string(),
            interval_ms: interval_ms.max(1),
            inner: Mutex::default(),
            plugins: Mutex::default(),
            graph: Mutex::default(),
        })
    }

    /// Shows the job graph ([`sluice::StreamingContext::describe_graph`]).
    pub fn set_graph(&self, description: &str) {
        *self.graph.lock().unwrap_or_else(|e| e.into_inner()) =
            description.lines().map(str::to_string).collect();
    }

    /// Shows `plugin`'s per-function time, calls, traps and retries, and
    /// its recent guest logs.
    pub fn watch_plugin(&self, plugin: Arc<sluice::plugin::Plugin>) {
        self.plugins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(plugin);
    }

    fn watched(&self) -> Vec<Arc<sluice::plugin::Plugin>> {
        self.plugins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The counters of every function of the watched plugins: per
    /// version, once a version has been hot-swapped in.
    fn functions(&self) -> Vec<FunctionRow> {
        let mut out = Vec::new();
        for root in self.watched() {
            let live = root.live();
            let versions = if Arc::ptr_eq(&live, &root) {
                vec![root]
            } else {
                vec![root, live]
            };
            for p in versions {
                for (f, stats) in p.description().functions.iter().zip(&p.stats().functions) {
                    out.push(FunctionRow {
                        plugin: p.name().to_string(),
                        version: p.description().version.clone(),
                        function: f.name.clone(),
                        kind: f.kind.to_string(),
                        calls: load(&stats.calls),
                        seconds: load(&stats.nanos) as f64 / 1e9,
                        traps: load(&stats.traps),
                    });
                }
            }
        }
        out
    }

    /// Metrics for a job built from a spec, attached to it: its batches,
    /// graph, plugins (what `sluice run --ui` and `sluice serve` show).
    pub fn attach(job: &sluice::spec::Job) -> Arc<Metrics> {
        let metrics = Metrics::new(&job.name, job.context.batch_interval().as_millis() as i64);
        job.context.add_streaming_listener(metrics.listener());
        for plugin in job.plugins.values() {
            metrics.watch_plugin(plugin.clone());
        }
        metrics.set_graph(&job.context.describe_graph());
        metrics
    }

    /// The most recent guest log lines of the watched plugins, oldest first.
    pub fn recent_logs(&self, n: usize) -> Vec<sluice::plugin::GuestLogLine> {
        let mut all: Vec<_> = self
            .watched()
            .iter()
            .flat_map(|p| {
                let live = p.live();
                let mut logs = p.recent_logs();
                if !Arc::ptr_eq(&live, p) {
                    logs.extend(live.recent_logs());
                }
                logs
            })
            .collect();
        all.sort_by_key(|l| l.batch);
        let skip = all.len().saturating_sub(n);
        all.split_off(skip)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a completed batch.
    pub fn record(&self, b: &BatchInfo) {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let row = BatchRow {
            time: b.time.millis(),
            index: b.index,
            records: b.input_records,
            rate: b.input_records as f64 * 1000.0 / self.interval_ms as f64,
            scheduling_delay_ms: ms(b.scheduling_delay),
            processing_ms: ms(b.processing_time),
            total_delay_ms: ms(b.total_delay()),
            rate_limit: b.rate_limit,
            operators: b
                .operators
                .iter()
                .map(|o| (o.stream.clone(), ms(o.time), o.records_out))
                .collect(),
        };
        let mut m = self.lock();
        m.batches += 1;
        m.input_records += b.input_records;
        m.processing.observe(b.processing_time.as_secs_f64());
        m.scheduling.observe(b.scheduling_delay.as_secs_f64());
        m.total_delay.observe(b.total_delay().as_secs_f64());
        for o in &b.operators {
            let t = m.operators.entry(o.stream.clone()).or_default();
            t.stream.clone_from(&o.stream);
            t.op.clone_from(&o.op);
            t.batches += 1;
            t.seconds += o.time.as_secs_f64();
            t.records_out += o.records_out;
        }
        for l in &b.source_lag {
            m.lag
                .insert((l.source.clone(), l.partition.clone()), l.records);
        }
        for s in &b.stages {
            let t = m.stages.entry(s.stage).or_default();
            t.stage = s.stage;
            t.streams.clone_from(&s.streams);
            t.tasks = s.tasks;
            t.batches += 1;
            t.seconds += s.time.as_secs_f64();
            t.records_out += s.records_out;
        }
        m.recent.push_back(row);
        while m.recent.len() > RECENT {
            m.recent.pop_front();
        }
    }

    /// Records a receiver error.
    pub fn receiver_error(&self, source: &str, message: &str) {
        let mut m = self.lock();
        m.receiver_errors += 1;
        let at = m.current.unwrap_or(0);
        m.recent_errors
            .push_back((at, source.to_string(), message.to_string()));
        while m.recent_errors.len() > 50 {
            m.recent_errors.pop_front();
        }
    }

    /// A listener that records every batch and receiver error here.
    pub fn listener(self: &Arc<Self>) -> Box<dyn StreamingListener> {
        Box::new(Recorder(Arc::clone(self)))
    }

    /// Batches completed, input records, and the latest batch: what a job
    /// listing needs, without building the whole [`Metrics::status`].
    pub fn summary(&self) -> (u64, u64, Option<BatchRow>) {
        let m = self.lock();
        (m.batches, m.input_records, m.recent.back().cloned())
    }

    /// The recent batches (oldest first) and operator totals, as JSON for the UI.
    pub fn status(&self) -> serde_json::Value {
        let m = self.lock();
        serde_json::json!({
            "job": self.job,
            "batch_interval_ms": self.interval_ms,
            "batches": m.batches,
            "input_records": m.input_records,
            "recent": m.recent,
            "operators": m.operators.values().collect::<Vec<_>>(),
            "stages": m.stages.values().collect::<Vec<_>>(),
            "lag": m.lag.iter().map(|((source, partition), records)| serde_json::json!({
                "source": source, "partition": partition, "records": records,
            })).collect::<Vec<_>>(),
            "graph": *self.graph.lock().unwrap_or_else(|e| e.into_inner()),
            "functions": self.functions(),
            "plugins": self.watched().iter().map(|p| {
                let s = p.stats();
                serde_json::json!({
                    "name": p.name(),
                    "version": p.live().description().version,
                    "calls": load(&s.calls),
                    "traps": load(&s.traps),
                    "retries": load(&s.retries),
                    "instances": load(&s.instances),
                    "dropped_log_lines": load(&s.dropped_log_lines),
                })
            }).collect::<Vec<_>>(),
            "logs": self.recent_logs(50),
            "receiver_errors": m.receiver_errors,
            "recent_receiver_errors": m.recent_errors.iter().map(|(t, s, e)| serde_json::json!({"batch": t, "source": s, "message": e})).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice::graph::{OperatorInfo, SourceLag, StageInfo};
    use sluice::time::BatchTime;
    use std::time::Duration;

    fn batch(index: u64, records: u64, ms: u64) -> BatchInfo {
        BatchInfo {
            time: BatchTime(1000 * (index as i64 + 1)),
            index,
            input_records: records,
            scheduling_delay: Duration::from_millis(1),
            processing_time: Duration::from_millis(ms),
            operators: vec![OperatorInfo {
                stream: "wo\"rds".to_string(),
                op: "FlatMap p.split (flat-map)".to_string(),
                time: Duration::from_millis(ms),
                records_out: records * 2,
                chain: None,
            }],
            stages: vec![StageInfo {
                stage: 0,
                streams: "lines → wo\"rds".to_string(),
                tasks: Some(2),
                time: Duration::from_millis(ms),
                records_out: records * 2,
            }],
            rate_limit: Some(250.0),
            source_lag: vec![SourceLag {
                source: "li\"nes".to_string(),
                partition: "SEQ seq.>".to_string(),
                records: 1000 - index,
            }],
        }
    }

    #[test]
    fn totals_histograms_and_prometheus_text() {
        let m = Metrics::new("wc", 500);
        m.record(&batch(0, 10, 3));
        m.record(&batch(1, 30, 300));
        let text = m.prometheus();
        assert!(
            text.contains("sluice_batches_total{job=\"wc\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("sluice_input_records_total{job=\"wc\"} 40\n"));
        assert!(text.contains("sluice_receiver_rate_limit{job=\"wc\"} 250\n"));
        // The last batch: 30 records in a 500 ms interval.
        assert!(text.contains("sluice_last_batch_input_rate{job=\"wc\"} 60\n"));
        // Buckets are cumulative: 3 ms in le=0.005 and up, 300 ms in le=0.5 and up.
        assert!(
            text.contains("sluice_batch_processing_seconds_bucket{job=\"wc\",le=\"0.005\"} 1\n")
        );
        assert!(text.contains("sluice_batch_processing_seconds_bucket{job=\"wc\",le=\"0.5\"} 2\n"));
        assert!(
            text.contains("sluice_batch_processing_seconds_bucket{job=\"wc\",le=\"+Inf\"} 2\n")
        );
        assert!(text.contains("sluice_batch_processing_seconds_count{job=\"wc\"} 2\n"));
        // Label values are escaped.
        assert!(text.contains(
            "sluice_operator_records_out_total{job=\"wc\",stream=\"wo\\\"rds\",op=\"FlatMap p.split (flat-map)\"} 80\n"
        ), "{text}");
        let status = m.status();
        assert_eq!(status["recent"].as_array().unwrap().len(), 2);
        assert_eq!(status["operators"][0]["batches"], 2);
        // Per stage of the plan: totals on the page and in Prometheus.
        assert_eq!(status["stages"][0]["batches"], 2);
        assert_eq!(status["stages"][0]["records_out"], 80);
        assert_eq!(status["stages"][0]["tasks"], 2);
        assert!(text.contains("sluice_stage_records_out_total{job=\"wc\",stage=\"0\"} 80\n"));
        assert!(text.contains("sluice_stage_seconds_total{job=\"wc\",stage=\"0\"} 0.303\n"));
        // The latest lag of each source partition.
        assert_eq!(status["lag"][0]["records"], 999);
        assert_eq!(status["lag"][0]["partition"], "SEQ seq.>");
        assert!(text.contains(
            "sluice_source_lag_records{job=\"wc\",source=\"li\\\"nes\",partition=\"SEQ seq.>\"} 999\n"
        ), "{text}");
        for i in 2..(RECENT as u64 + 10) {
            m.record(&batch(i, 1, 1));
        }
        assert_eq!(m.status()["recent"].as_array().unwrap().len(), RECENT);
    }
}
