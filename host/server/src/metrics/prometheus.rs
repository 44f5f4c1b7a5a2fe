//! The metrics in Prometheus' text exposition format
//! ([`Metrics::prometheus`]).

use super::{BUCKETS, FunctionRow, Histogram, Inner, Metrics, load};
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

impl Histogram {
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"{le}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// Writes a metric family's `# HELP` and `# TYPE` lines.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// The figures in Prometheus' text exposition format.
    pub fn prometheus(&self) -> String {
        let m = self.lock();
        let job = format!("job=\"{}\"", label(&self.job));
        let mut out = String::new();
        batch_families(&mut out, &m, &job);
        operator_families(&mut out, &m, &job);
        stage_families(&mut out, &m, &job);
        drop(m);
        let functions = self.functions();
        function_families(&mut out, functions, &job);
        let watched = self.watched();
        plugin_families(&mut out, watched, &job);
        out
    }
}

/// The job's batch counters, last-batch gauges and batch-time histograms.
fn batch_families(out: &mut String, m: &Inner, job: &str) {
    for (name, help, value) in [
        ("sluice_batches_total", "Batches completed.", m.batches),
        (
            "sluice_receiver_errors_total",
            "Receiver errors (refused or dropped connections, unreadable files).",
            m.receiver_errors,
        ),
        (
            "sluice_input_records_total",
            "Records received from all sources.",
            m.input_records,
        ),
    ] {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name}{{{job}}} {value}");
    }
    let last = m.recent.back();
    for (name, help, value) in [
        (
            "sluice_last_batch_input_rate",
            "Input records per second in the last batch.",
            last.map_or(0.0, |b| b.rate),
        ),
        (
            "sluice_last_batch_scheduling_delay_seconds",
            "Scheduling delay of the last batch.",
            last.map_or(0.0, |b| b.scheduling_delay_ms / 1e3),
        ),
        (
            "sluice_last_batch_processing_seconds",
            "Processing time of the last batch.",
            last.map_or(0.0, |b| b.processing_ms / 1e3),
        ),
        (
            "sluice_last_batch_total_delay_seconds",
            "Total delay of the last batch.",
            last.map_or(0.0, |b| b.total_delay_ms / 1e3),
        ),
    ] {
        header(out, name, "gauge", help);
        let _ = writeln!(out, "{name}{{{job}}} {value}");
    }
    if let Some(limit) = last.and_then(|b| b.rate_limit) {
        let name = "sluice_receiver_rate_limit";
        header(
            out,
            name,
            "gauge",
            "Records per second receivers may take in (backpressure or maximum).",
        );
        let _ = writeln!(out, "{name}{{{job}}} {limit}");
    }
    for (name, help, h) in [
        (
            "sluice_batch_processing_seconds",
            "Processing time per batch.",
            &m.processing,
        ),
        (
            "sluice_batch_scheduling_delay_seconds",
            "Scheduling delay per batch.",
            &m.scheduling,
        ),
        (
            "sluice_batch_total_delay_seconds",
            "Total delay per batch.",
            &m.total_delay,
        ),
    ] {
        header(out, name, "histogram", help);
        h.render(out, name, job);
    }
}

/// Records per source and time and records out per operator.
fn operator_families(out: &mut String, m: &Inner, job: &str) {
    header(
        out,
        "sluice_source_records_total",
        "counter",
        "Records received per source stream.",
    );
    for (stream, t) in m
        .operators
        .iter()
        .filter(|(_, t)| t.op.starts_with("source "))
    {
        let _ = writeln!(
            out,
            "sluice_source_records_total{{{job},source=\"{}\"}} {}",
            label(stream),
            t.records_out
        );
    }
    header(
        out,
        "sluice_operator_seconds_total",
        "counter",
        "Time spent in each operator (plugin calls included).",
    );
    for (stream, t) in &m.operators {
        let _ = writeln!(
            out,
            "sluice_operator_seconds_total{{{job},stream=\"{}\",op=\"{}\"}} {}",
            label(stream),
            label(&t.op),
            t.seconds
        );
    }
    header(
        out,
        "sluice_operator_records_out_total",
        "counter",
        "Records each operator produced.",
    );
    for (stream, t) in &m.operators {
        let _ = writeln!(
            out,
            "sluice_operator_records_out_total{{{job},stream=\"{}\",op=\"{}\"}} {}",
            label(stream),
            label(&t.op),
            t.records_out
        );
    }
}

/// Time and output of each stage of the plan, and the lag of each source
/// partition.
fn stage_families(out: &mut String, m: &Inner, job: &str) {
    header(
        out,
        "sluice_source_lag_records",
        "gauge",
        "Records of each source partition not yet read, after the latest batch.",
    );
    for ((source, partition), records) in &m.lag {
        let _ = writeln!(
            out,
            "sluice_source_lag_records{{{job},source=\"{}\",partition=\"{}\"}} {records}",
            label(source),
            label(partition)
        );
    }
    header(
        out,
        "sluice_stage_seconds_total",
        "counter",
        "Time spent in each stage of the plan (its operators and outputs).",
    );
    for (stage, t) in &m.stages {
        let _ = writeln!(
            out,
            "sluice_stage_seconds_total{{{job},stage=\"{stage}\"}} {}",
            t.seconds
        );
    }
    header(
        out,
        "sluice_stage_records_out_total",
        "counter",
        "Records each stage passed on to the next stage or to outputs.",
    );
    for (stage, t) in &m.stages {
        let _ = writeln!(
            out,
            "sluice_stage_records_out_total{{{job},stage=\"{stage}\"}} {}",
            t.records_out
        );
    }
}

/// Calls, time and traps of each plugin function.
fn function_families(out: &mut String, functions: Vec<FunctionRow>, job: &str) {
    type Value = fn(&FunctionRow) -> String;
    let per_function: [(&str, &str, Value); 3] = [
        (
            "sluice_plugin_function_calls_total",
            "Calls of each plugin function (retries included).",
            |f| f.calls.to_string(),
        ),
        (
            "sluice_plugin_function_seconds_total",
            "Time inside each plugin function.",
            |f| f.seconds.to_string(),
        ),
        (
            "sluice_plugin_function_traps_total",
            "Traps in each plugin function.",
            |f| f.traps.to_string(),
        ),
    ];
    for (name, help, value) in per_function {
        header(out, name, "counter", help);
        for f in &functions {
            let _ = writeln!(
                out,
                "{name}{{{job},plugin=\"{}\",version=\"{}\",function=\"{}\"}} {}",
                label(&f.plugin),
                label(&f.version),
                label(&f.function),
                value(f)
            );
        }
    }
}

/// Retries, instances and dropped guest log lines of each plugin.
fn plugin_families(out: &mut String, watched: Vec<Arc<sluice::plugin::Plugin>>, job: &str) {
    type Counter = fn(&sluice::plugin::PluginStats) -> &AtomicU64;
    let per_plugin: [(&str, &str, Counter); 3] = [
        (
            "sluice_plugin_retries_total",
            "Partition-batches retried on a fresh instance after a trap.",
            |s| &s.retries,
        ),
        ("sluice_plugin_instances_total", "Instances created.", |s| {
            &s.instances
        }),
        (
            "sluice_guest_log_lines_dropped_total",
            "Guest log lines dropped by the caps.",
            |s| &s.dropped_log_lines,
        ),
    ];
    for (name, help, counter) in per_plugin {
        header(out, name, "counter", help);
        for p in &watched {
            let v = load(counter(p.stats()));
            let _ = writeln!(out, "{name}{{{job},plugin=\"{}\"}} {v}", label(p.name()));
        }
    }
}
