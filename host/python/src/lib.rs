//! `sluice._native`: the engine embedded in CPython, for the Python driver
//! (`python/sluice/pyspark`).
//!
//! The Python side records a job's DStream graph and ships its lambdas into
//! one *program* (source text and captured values, `python/sluice/_ship.py`);
//! this module builds the graph on a [`StreamingContext`] when the job
//! starts, with the program's functions running in the PySpark runner — the
//! component `build.rs` makes from `python/runner` (CPython in wasm) —
//! loaded once per job under the job's limits. Driver-side outputs
//! (`foreachRDD`, `pprint`) call back into Python with each batch's raw
//! columns; the Python side decodes them (`sluice/_values.py`).

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use sluice::rdd::Rdd;
use sluice::time::Clock;
use sluice::{
    BatchTime, DStream, Func, Limits, ManualClock, Plugin, Runtime, StopHandle, StreamingContext,
    SystemClock,
};
use sluice_sdk::{Batch, Column};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// The runner component, built by `build.rs`.
static RUNNER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/runner.wasm"));

/// The name the runner has in a job's errors and metrics.
const RUNNER_NAME: &str = "python";

fn runtime_error(e: impl std::fmt::Display) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

/// A field of an operation's arguments, named in the error when missing.
fn arg<'py, T: FromPyObjectOwned<'py>>(args: &Bound<'py, PyDict>, name: &str) -> PyResult<T> {
    match args.get_item(name)? {
        Some(v) => v.extract::<T>().map_err(|e| {
            let e: PyErr = e.into();
            PyValueError::new_err(format!("argument `{name}`: {e}"))
        }),
        None => Err(PyValueError::new_err(format!(
            "argument `{name}` is missing"
        ))),
    }
}

/// An optional field of an operation's arguments (absent or `None`).
fn opt<'py, T: FromPyObjectOwned<'py>>(
    args: &Bound<'py, PyDict>,
    name: &str,
) -> PyResult<Option<T>> {
    match args.get_item(name)? {
        Some(v) if !v.is_none() => Ok(Some(v.extract::<T>().map_err(|e| {
            let e: PyErr = e.into();
            PyValueError::new_err(format!("argument `{name}`: {e}"))
        })?)),
        _ => Ok(None),
    }
}

fn millis(args: &Bound<'_, PyDict>, name: &str) -> PyResult<Duration> {
    Ok(Duration::from_millis(arg::<u64>(args, name)?))
}

/// A column from encoded elements (each a whole MessagePack value).
fn column_of(elements: &[Vec<u8>]) -> PyResult<Column> {
    let mut c = Column::with_capacity(elements.len(), elements.iter().map(Vec::len).sum());
    for (i, e) in elements.iter().enumerate() {
        c.push_encoded(e)
            .map_err(|e| PyValueError::new_err(format!("element {i}: {e}")))?;
    }
    Ok(c)
}

/// A running job: its batch loop's thread and how to stop it.
struct Running {
    thread: Option<JoinHandle<sluice::Result<sluice::RunSummary>>>,
    stop: StopHandle,
}

struct State {
    /// The job's name (the application's).
    name: String,
    ctx: Arc<StreamingContext>,
    streams: Vec<DStream>,
    runner: Option<Arc<Plugin>>,
    running: Option<Running>,
    /// How the run ended (`None` while it runs or before it starts).
    ended: Option<Result<(), String>>,
}

/// A job being built, then run: `sluice.pyspark.StreamingContext`'s engine.
#[pyclass(module = "sluice._native")]
struct Job {
    state: Mutex<State>,
}

impl Job {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn stream(&self, id: usize) -> PyResult<&DStream> {
        self.streams
            .get(id)
            .ok_or_else(|| PyValueError::new_err(format!("no stream {id}")))
    }

    fn add(&mut self, s: DStream) -> usize {
        self.streams.push(s);
        self.streams.len() - 1
    }

    fn func(&self, name: &str) -> PyResult<Func> {
        let runner = self.runner.as_ref().ok_or_else(|| {
            PyRuntimeError::new_err("the job's functions are not loaded (call `runner` first)")
        })?;
        runner.func(name).map_err(runtime_error)
    }

    fn opt_func(&self, args: &Bound<'_, PyDict>, field: &str) -> PyResult<Option<Func>> {
        opt::<String>(args, field)?
            .map(|name| self.func(&name))
            .transpose()
    }
}

/// A batch's partitions for Python: `(key_bytes, key_offsets, value_bytes,
/// value_offsets)` each (no keys: empty).
fn partitions<'py>(py: Python<'py>, rdd: &Rdd) -> PyResult<Bound<'py, PyList>> {
    let parts = PyList::empty(py);
    for p in &rdd.partitions {
        parts.append((
            PyBytes::new(py, &p.keys.bytes),
            p.keys.offsets.clone(),
            PyBytes::new(py, &p.values.bytes),
            p.values.offsets.clone(),
        ))?;
    }
    Ok(parts)
}

/// A keyed batch of encoded `(key, value)` pairs.
fn keyed_batch(pairs: &[(Vec<u8>, Vec<u8>)]) -> PyResult<Batch> {
    let mut batch = Batch::default();
    for (k, v) in pairs {
        batch
            .keys
            .push_encoded(k)
            .and_then(|()| batch.values.push_encoded(v))
            .map_err(|e| PyValueError::new_err(format!("an initial state: {e}")))?;
    }
    Ok(batch)
}

/// Finishes the run: joins its thread and keeps how it ended.
fn settle(state: &mut State) {
    if let Some(running) = state.running.as_mut()
        && let Some(thread) = running.thread.take()
    {
        let ended = match thread.join() {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the job's batch loop panicked".to_string()),
        };
        state.ended = Some(ended);
    }
}

#[pymethods]
impl Job {
    /// A job named `name` cutting batches every `batch_ms` on `workers`
    /// worker threads, checkpointing into `checkpoint` when given.
    /// With `manual_clock` (Spark's test clock) batches run back to back
    /// from the current time, without waiting for it, and a job whose
    /// sources are all finite ends when they are.
    #[new]
    #[pyo3(signature = (name, batch_ms, workers, checkpoint=None, manual_clock=false))]
    fn new(
        name: &str,
        batch_ms: u64,
        workers: usize,
        checkpoint: Option<PathBuf>,
        manual_clock: bool,
    ) -> Self {
        init_logging();
        let interval = Duration::from_millis(batch_ms.max(1));
        let mut ctx = StreamingContext::new(interval)
            .with_name(name)
            .with_workers(workers.max(1));
        if manual_clock {
            let now = SystemClock.now_ms();
            let start = now - now % interval.as_millis() as i64;
            ctx = ctx.with_clock(Arc::new(ManualClock::new(start)));
        }
        if let Some(dir) = checkpoint {
            ctx = ctx.with_checkpoint(dir);
        }
        Job {
            state: Mutex::new(State {
                name: name.to_string(),
                ctx: Arc::new(ctx),
                streams: Vec::new(),
                runner: None,
                running: None,
                ended: None,
            }),
        }
    }

    /// Loads the runner with the job's `program` (the shipped functions),
    /// compiled once per machine and cached; `memory_mb` and `deadline_ms`
    /// lower or raise the sandbox's defaults.
    #[pyo3(signature = (program, memory_mb=None, deadline_ms=None))]
    fn runner(
        &self,
        py: Python<'_>,
        program: &[u8],
        memory_mb: Option<u64>,
        deadline_ms: Option<u64>,
    ) -> PyResult<()> {
        let mut limits = Limits::default();
        if let Some(mb) = memory_mb {
            limits.memory_bytes = mb << 20;
        }
        if let Some(ms) = deadline_ms {
            limits.call_deadline = Duration::from_millis(ms);
        }
        let job = self.state().ctx.name().to_string();
        let plugin = py
            .detach(|| {
                let runtime = Runtime::shared()?;
                Plugin::defined(
                    &runtime,
                    &job,
                    RUNNER_NAME,
                    std::path::Path::new("<sluice.pyspark runner>"),
                    RUNNER,
                    program,
                    limits,
                )
            })
            .map_err(runtime_error)?;
        self.state().runner = Some(plugin);
        Ok(())
    }

    /// Adds a source: `socket` (host, port), `queue` (batches of encoded
    /// elements, one_at_a_time, default, partitions) or `text_files` (dir).
    fn source(&self, kind: &str, args: &Bound<'_, PyDict>) -> PyResult<usize> {
        let mut st = self.state();
        let s = match kind {
            "socket" => {
                let host: String = arg(args, "host")?;
                let port: u16 = arg(args, "port")?;
                st.ctx.socket_text_stream(&host, port)
            }
            "queue" => {
                let batches: Vec<Vec<Vec<u8>>> = arg(args, "batches")?;
                let default: Option<Vec<Vec<u8>>> = opt(args, "default")?;
                let batches = batches
                    .iter()
                    .map(|b| column_of(b))
                    .collect::<PyResult<Vec<_>>>()?;
                let default = default.as_deref().map(column_of).transpose()?;
                st.ctx.queue_stream_columns(
                    batches,
                    arg(args, "partitions")?,
                    arg(args, "one_at_a_time")?,
                    default,
                )
            }
            "text_files" => {
                let dir: PathBuf = arg(args, "dir")?;
                st.ctx.text_file_stream(dir, false)
            }
            // A broker source with the TOML spec's settings (JSON).
            "spec" => {
                let text: String = arg(args, "settings")?;
                let settings: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| PyValueError::new_err(format!("source settings: {e}")))?;
                let kind = settings["type"].as_str().unwrap_or("source").to_string();
                let name = format!("{kind}-{}", st.streams.len());
                let origin: PathBuf = arg(args, "origin")?;
                let line: usize = arg(args, "line")?;
                sluice::spec::add_source(&st.ctx, &st.name, &name, &settings, (&origin, line))
                    .map_err(runtime_error)?
            }
            other => return Err(PyValueError::new_err(format!("no source kind `{other}`"))),
        };
        Ok(st.add(s))
    }

    /// Adds the stream `kind` of `inputs` (stream ids) with `args`; returns
    /// its id. Functions are named by the program's names.
    fn op(&self, kind: &str, inputs: Vec<usize>, args: &Bound<'_, PyDict>) -> PyResult<usize> {
        let mut st = self.state();
        let input =
            st.stream(*inputs.first().ok_or_else(|| {
                PyValueError::new_err(format!("`{kind}` needs an input stream"))
            })?)?;
        let other = |i: usize| -> PyResult<&DStream> {
            st.stream(*inputs.get(i).ok_or_else(|| {
                PyValueError::new_err(format!("`{kind}` needs {} input streams", i + 1))
            })?)
        };
        let partitions = || -> PyResult<usize> { Ok(arg::<usize>(args, "partitions")?.max(1)) };
        let f = || st.func(&arg::<String>(args, "function")?);
        let s = match kind {
            "map_partitions" => input.map_partitions(f()?),
            "filter" => input.filter(f()?),
            "reduce" => input.reduce(f()?),
            "reduce_by_key" => input.reduce_by_key(f()?, partitions()?),
            "update_state_by_key" => match opt::<Vec<(Vec<u8>, Vec<u8>)>>(args, "initial")? {
                None => input.update_state_by_key(f()?, partitions()?),
                Some(initial) => {
                    input.update_state_by_key_from(f()?, partitions()?, keyed_batch(&initial)?)
                }
            },
            "combine_by_key" => input.combine_by_key(
                st.func(&arg::<String>(args, "create")?)?,
                st.func(&arg::<String>(args, "merge_value")?)?,
                st.func(&arg::<String>(args, "merge_combiners")?)?,
                partitions()?,
            ),
            "transform" => input.transform(f()?),
            "transform_with" => input.transform_with(other(1)?, f()?),
            "transform_all" => {
                let streams = inputs
                    .iter()
                    .map(|&i| st.stream(i).cloned())
                    .collect::<PyResult<Vec<_>>>()?;
                DStream::transform_all(&streams, f()?)
            }
            "count" => input.count(),
            "count_by_value" => input.count_by_value(partitions()?),
            "group_by_key" => input.group_by_key(partitions()?),
            "glom" => input.glom(),
            "repartition" => input.repartition(partitions()?),
            "union" => {
                let others = inputs[1..]
                    .iter()
                    .map(|&i| st.stream(i).cloned())
                    .collect::<PyResult<Vec<_>>>()?;
                input.union(&others)
            }
            "join" => input.join(other(1)?, partitions()?),
            "left_outer_join" => input.left_outer_join(other(1)?, partitions()?),
            "right_outer_join" => input.right_outer_join(other(1)?, partitions()?),
            "full_outer_join" => input.full_outer_join(other(1)?, partitions()?),
            "cogroup" => input.cogroup(other(1)?, partitions()?),
            "window" => input.window(millis(args, "length_ms")?, millis(args, "slide_ms")?),
            "reduce_by_window" => input.reduce_by_window(
                f()?,
                st.opt_func(args, "inverse")?,
                millis(args, "length_ms")?,
                millis(args, "slide_ms")?,
            ),
            "reduce_by_key_and_window" => input.reduce_by_key_and_window(
                f()?,
                st.opt_func(args, "inverse")?,
                millis(args, "length_ms")?,
                millis(args, "slide_ms")?,
                partitions()?,
                st.opt_func(args, "filter")?,
            ),
            "count_by_window" => {
                input.count_by_window(millis(args, "length_ms")?, millis(args, "slide_ms")?)
            }
            "count_by_value_and_window" => input.count_by_value_and_window(
                millis(args, "length_ms")?,
                millis(args, "slide_ms")?,
                partitions()?,
            ),
            "group_by_key_and_window" => input.group_by_key_and_window(
                millis(args, "length_ms")?,
                millis(args, "slide_ms")?,
                partitions()?,
            ),
            other => return Err(PyValueError::new_err(format!("no operation `{other}`"))),
        };
        Ok(st.add(s))
    }

    /// `slice(from, to)` of stream `input` (times in ms): the remembered
    /// batches as `(batch_time_ms, partitions)`, partitions as `foreach`
    /// gives them.
    fn slice<'py>(
        &self,
        py: Python<'py>,
        input: usize,
        from_ms: i64,
        to_ms: i64,
    ) -> PyResult<Vec<(i64, Bound<'py, PyList>)>> {
        let kept = self
            .state()
            .stream(input)?
            .slice_rdds(BatchTime(from_ms), BatchTime(to_ms));
        kept.iter()
            .map(|(time, _, rdd)| Ok((time.millis(), partitions(py, rdd)?)))
            .collect()
    }

    /// Calls `callback(batch_time_ms, partitions)` on the driver for every
    /// batch of stream `input`; each partition is `(key_bytes, key_offsets,
    /// value_bytes, value_offsets)` (no keys: empty). An exception fails the
    /// batch, named as `name`.
    fn foreach(&self, input: usize, name: String, callback: Py<PyAny>) -> PyResult<()> {
        let st = self.state();
        st.stream(input)?
            .foreach_rdd(move |time: BatchTime, rdd: &Rdd| {
                Python::attach(|py| {
                    callback
                        .call1(py, (time.millis(), partitions(py, rdd)?))
                        .map(drop)
                })
                .map_err(|e| {
                    let message = Python::attach(|py| python_error(py, &e));
                    sluice::Error::Element {
                        stream: name.clone(),
                        batch: time,
                        message,
                    }
                })
            });
        Ok(())
    }

    /// Calls `callback(event, fields)` on the job's thread for each batch
    /// `"submitted"`, `"started"` and `"completed"` (fields: `time_ms`,
    /// and for a completed batch `index`, `records`, `scheduling_delay_ms`,
    /// `processing_ms`) and each `"receiver_error"` (`source`, `message`).
    /// An exception is printed and the job goes on, as Spark's listener bus.
    fn listen(&self, callback: Py<PyAny>) {
        self.state()
            .ctx
            .add_streaming_listener(Box::new(PyListener(callback)));
    }

    /// `saveAsTextFiles(prefix, suffix)` of stream `input` (its elements
    /// already turned into text by the runner).
    #[pyo3(signature = (input, prefix, suffix=None))]
    fn save_text(&self, input: usize, prefix: PathBuf, suffix: Option<String>) -> PyResult<()> {
        let st = self.state();
        st.stream(input)?
            .save_as_text_files(prefix, suffix.as_deref());
        Ok(())
    }

    /// Keeps every stream's batches for `ms` (Spark's `remember`).
    fn remember(&self, ms: u64) {
        self.state().ctx.remember(Duration::from_millis(ms));
    }

    /// The physical plan, as `sluice explain` shows it.
    fn explain(&self) -> String {
        self.state().ctx.explain().to_string()
    }

    /// Starts the batch loop on a thread of its own.
    fn start(&self) -> PyResult<()> {
        let mut st = self.state();
        if st.running.is_some() {
            return Err(PyRuntimeError::new_err("the job has already been started"));
        }
        let ctx = st.ctx.clone();
        let stop = ctx.stop_handle();
        let thread = std::thread::Builder::new()
            .name(format!("sluice-job-{}", ctx.name()))
            .spawn(move || ctx.run(None))
            .map_err(runtime_error)?;
        st.running = Some(Running {
            thread: Some(thread),
            stop,
        });
        Ok(())
    }

    /// Waits for the run to end, at most `timeout` seconds when given;
    /// returns whether it ended, or raises how it failed. Ctrl-C interrupts
    /// the wait.
    #[pyo3(signature = (timeout=None))]
    fn await_termination(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let deadline =
            timeout.map(|t| std::time::Instant::now() + Duration::from_secs_f64(t.max(0.0)));
        loop {
            let finished = {
                let st = self.state();
                match &st.running {
                    None => return Err(PyRuntimeError::new_err("the job has not been started")),
                    Some(r) => r.thread.as_ref().is_none_or(|t| t.is_finished()),
                }
            };
            if finished {
                let mut st = self.state();
                settle(&mut st);
                return match &st.ended {
                    Some(Err(e)) => Err(PyRuntimeError::new_err(e.clone())),
                    _ => Ok(true),
                };
            }
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Ok(false);
            }
            py.detach(|| std::thread::sleep(Duration::from_millis(20)));
            py.check_signals()?;
        }
    }

    /// Stops the run (the batch in progress ends first; `graceful` also
    /// waits for a last batch of what was received) and waits for it.
    /// Raises how the run failed, if it did.
    #[pyo3(signature = (graceful=false))]
    fn stop(&self, py: Python<'_>, graceful: bool) -> PyResult<()> {
        let _ = graceful; // The loop always ends with a last batch of what it received.
        let thread = {
            let mut st = self.state();
            match st.running.as_mut() {
                None => return Ok(()),
                Some(r) => {
                    r.stop.stop();
                    r.thread.take()
                }
            }
        };
        if let Some(thread) = thread {
            let joined = py.detach(|| thread.join());
            let mut st = self.state();
            st.ended = Some(match joined {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("the job's batch loop panicked".to_string()),
            });
        }
        match &self.state().ended {
            Some(Err(e)) => Err(PyRuntimeError::new_err(e.clone())),
            _ => Ok(()),
        }
    }

    /// Whether the run has ended (by itself, failing, or stopped).
    fn ended(&self) -> bool {
        let st = self.state();
        st.ended.is_some()
            || st
                .running
                .as_ref()
                .and_then(|r| r.thread.as_ref())
                .is_some_and(|t| t.is_finished())
    }
}

/// A Python `StreamingListener`, through `Job::listen`'s callback.
struct PyListener(Py<PyAny>);

impl PyListener {
    fn tell(&self, event: &str, fields: &[(&str, i64)], texts: &[(&str, &str)]) {
        Python::attach(|py| {
            let told = (|| {
                let d = PyDict::new(py);
                for (k, v) in fields {
                    d.set_item(k, v)?;
                }
                for (k, v) in texts {
                    d.set_item(k, v)?;
                }
                self.0.call1(py, (event, d)).map(drop)
            })();
            if let Err(e) = told {
                eprintln!(
                    "a StreamingListener failed on {event}:\n{}",
                    python_error(py, &e)
                );
            }
        });
    }
}

impl sluice::StreamingListener for PyListener {
    fn on_batch_submitted(&mut self, time: BatchTime) {
        self.tell("submitted", &[("time_ms", time.millis())], &[]);
    }

    fn on_batch_started(&mut self, time: BatchTime, index: u64) {
        self.tell(
            "started",
            &[("time_ms", time.millis()), ("index", index as i64)],
            &[],
        );
    }

    fn on_batch_completed(&mut self, info: &sluice::BatchInfo) {
        let fields = [
            ("time_ms", info.time.millis()),
            ("index", info.index as i64),
            ("records", info.input_records as i64),
            (
                "scheduling_delay_ms",
                info.scheduling_delay.as_millis() as i64,
            ),
            ("processing_ms", info.processing_time.as_millis() as i64),
        ];
        self.tell("completed", &fields, &[]);
    }

    fn on_receiver_error(&mut self, source: &str, message: &str) {
        self.tell(
            "receiver_error",
            &[],
            &[("source", source), ("message", message)],
        );
    }
}

/// A Python exception as Python prints it (traceback included).
fn python_error(py: Python<'_>, e: &PyErr) -> String {
    let formatted = py.import("traceback").and_then(|tb| {
        let lines = tb.call_method1(
            "format_exception",
            (e.get_type(py), e.value(py), e.traceback(py)),
        )?;
        let text: Vec<String> = lines.extract()?;
        Ok(text.concat())
    });
    formatted.unwrap_or_else(|_| e.to_string())
}

/// Engine logs on stderr, at `SLUICE_LOG` (default: warnings), once.
fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        // Colours only for a terminal: a redirected log stays plain text.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init();
    });
}

/// The module: [`Job`].
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Job>()?;
    m.add("RUNNER_BYTES", RUNNER.len())?;
    Ok(())
}
