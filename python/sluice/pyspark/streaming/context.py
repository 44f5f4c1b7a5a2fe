"""``StreamingContext``: sources, the job's settings, and its run on the
embedded engine."""

import os
import threading

from ... import _native
from ..._ship import Program
from ..._values import dumps
from ..rdd import RDD
from .dstream import DStream, _ms


class StreamingError(RuntimeError):
    """The job failed: its message names the operator or function at
    fault, the batch time and, for a Python function, its traceback."""


class _Planner:
    """Turns the recorded DStreams into the engine's streams, in order."""

    def __init__(self, program):
        self.program = program
        self.steps = []  # (method, *args) on the native job
        self.ids = {}
        self.keep = []
        self.count = 0
        self.names = set()
        self.needs_checkpoint = False

    def stream(self, d):
        key = id(d)
        if key not in self.ids:
            self.keep.append(d)
            self.ids[key] = d._plan(self)
        return self.ids[key]

    def _new(self, *step):
        self.steps.append(step)
        self.count += 1
        return self.count - 1

    def stateful(self):
        """The stream being planned keeps state: the job needs a checkpoint
        directory (as Spark requires)."""
        self.needs_checkpoint = True

    def source(self, kind, args):
        return self._new("source", kind, args)

    def op(self, kind, inputs, args):
        return self._new("op", kind, list(inputs), args)

    def output(self, kind, stream, args):
        self.steps.append(("output", kind, stream, args))

    def _name(self, text):
        name, n = text, 2
        while name in self.names:
            name, n = f"{text} #{n}", n + 1
        self.names.add(name)
        return name

    def _describe(self, index):
        d = self.program.defs[index]
        return f"{d['name']} ({os.path.basename(d['file'])}:{d['line']})"

    def function(self, kind, index, op, **extra):
        name = self._name(f"{op} {self._describe(index)}")
        return self.program.add(name, kind, function=index, **extra)

    def chain(self, steps, shape):
        text = " → ".join(step if index is None else f"{step} {self._describe(index)}" for step, index in steps)
        if shape:
            steps = (("shape", shape),) + tuple(steps)
        return self.program.add(self._name(text), "map-partitions", steps=steps)


class _Event:
    """A listener event's fields as PySpark's Java objects give them."""

    def __init__(self, info):
        self._info = info

    def batchInfo(self):
        return _BatchInfo(self._info)


class _Time:
    def __init__(self, ms):
        self._ms = ms

    def milliseconds(self):
        return self._ms

    def __repr__(self):
        return f"{self._ms} ms"


class _BatchInfo:
    """``batchCompleted.batchInfo()``: times in ms (-1: not known)."""

    def __init__(self, f):
        self._f = f

    def batchTime(self):
        return _Time(self._f["time_ms"])

    def numRecords(self):
        return self._f.get("records", 0)

    def schedulingDelay(self):
        return self._f.get("scheduling_delay_ms", -1)

    def processingDelay(self):
        return self._f.get("processing_ms", -1)

    def totalDelay(self):
        if "processing_ms" not in self._f:
            return -1
        return self._f["scheduling_delay_ms"] + self._f["processing_ms"]

    def submissionTime(self):
        return self._f["time_ms"]


class _ReceiverError:
    def __init__(self, f):
        self._f = f

    def receiverInfo(self):
        return self

    def name(self):
        return self._f["source"]

    def lastErrorMessage(self):
        return self._f["message"]

    def lastError(self):
        return self._f["message"]


class _ListenerBus:
    """The engine's events to the user's ``StreamingListener``s."""

    def __init__(self, listeners):
        self.listeners = list(listeners)

    def __call__(self, event, fields):
        for listener in self.listeners:
            if event == "submitted":
                listener.onBatchSubmitted(_Event(fields))
            elif event == "started":
                listener.onBatchStarted(_Event(fields))
            elif event == "completed":
                listener.onBatchCompleted(_Event(fields))
            elif event == "receiver_error":
                listener.onReceiverError(_ReceiverError(fields))


class StreamingContext:
    """PySpark's ``StreamingContext``: ``StreamingContext(sc, 1)`` cuts a
    batch every second."""

    _activeContext = None
    _lock = threading.RLock()

    def __init__(self, sparkContext, batchDuration=None, jssc=None):
        if batchDuration is None:
            raise ValueError("batchDuration is needed (seconds)")
        self._sc = sparkContext
        self._batch_ms = _ms(batchDuration, "batchDuration")
        if self._batch_ms <= 0:
            raise ValueError(f"batchDuration must be positive, not {batchDuration}")
        self._program = Program()
        self._outputs = []
        self._checkpoint = None
        self._remember_ms = None
        self._listeners = []
        self._job = None
        # id(DStream) -> its engine stream, once started.
        self._planned = {}
        self._ran = None
        self._stopped = False

    @property
    def sparkContext(self):
        return self._sc

    def _ship(self, f, role):
        self._check_not_started()
        return self._program.ship(f, role)

    def _check_not_started(self):
        if self._job is not None or self._stopped:
            raise ValueError(
                "Adding new inputs, transformations, and output operations after starting a context "
                "is not supported"
            )

    def _add_output(self, stream, kind, args):
        self._check_not_started()
        self._outputs.append((stream, kind, args))

    def _manual_clock(self):
        """Spark's test clock (``spark.streaming.clock``): batches back to
        back, a job of queues ending when they are taken."""
        clock = self._sc.getConf().get("spark.streaming.clock", "")
        return clock.endswith("ManualClock")

    # -- sources ----------------------------------------------------------

    def _source(self, kind, args):
        return DStream(self, lambda planner: planner.source(kind, args), self._batch_ms)

    def socketTextStream(self, hostname, port, storageLevel=None):
        """Lines read from a TCP server (reconnecting when it closes)."""
        return self._source("socket", {"host": hostname, "port": int(port)})

    def textFileStream(self, directory):
        """Lines of the files that appear in ``directory`` after the start."""
        return self._source("text_files", {"dir": os.fspath(directory)})

    def queueStream(self, rdds, oneAtATime=True, default=None):
        """Batches given in advance: RDDs or lists, one per batch
        (``oneAtATime``) or all in the first; then ``default`` each batch."""

        def elements(rdd):
            items = rdd.collect() if isinstance(rdd, RDD) else list(rdd)
            return [dumps(x) for x in items]

        if default is None and not self._manual_clock():
            # As Spark: once the queue is taken, empty batches go on.
            default = []
        partitions = next(
            (r.getNumPartitions() for r in rdds if isinstance(r, RDD)), self._sc.defaultParallelism
        )
        args = {
            "batches": [elements(r) for r in rdds],
            "one_at_a_time": bool(oneAtATime),
            "default": elements(default) if default is not None else None,
            "partitions": partitions,
        }
        return self._source("queue", args)

    def transform(self, dstreams, transformFunc):
        """A stream of ``transformFunc(rdds)``: the batches of every stream
        of ``dstreams`` (same slide), as a list of RDDs; the function runs
        in the runner, as every function does."""
        if not dstreams:
            raise ValueError("should have at least one DStream to transform")
        first = dstreams[0]
        if any(d._slide_ms != first._slide_ms for d in dstreams):
            raise ValueError("all the DStreams should have same slide duration")
        return first._transform("transform_all", transformFunc, "all", False, tuple(dstreams[1:]))

    def union(self, *dstreams):
        if not dstreams:
            raise ValueError("should have at least one DStream to union")
        first = dstreams[0]
        for d in dstreams[1:]:
            first = first.union(d)
        return first

    # -- settings ---------------------------------------------------------

    def checkpoint(self, directory):
        """Checkpoints (state, window buffers, received data) go there; a
        job started again with the same directory resumes."""
        self._checkpoint = os.fspath(directory)

    def remember(self, duration):
        self._remember_ms = _ms(duration)

    def addStreamingListener(self, streamingListener):
        self._listeners.append(streamingListener)

    # -- running ----------------------------------------------------------

    def start(self):
        """Builds the job on the engine and starts its batches."""
        with StreamingContext._lock:
            if self._job is not None:
                return  # As Spark: a second start only warns.
            if self._stopped:
                raise ValueError("StreamingContext has already been stopped")
            if not self._outputs:
                raise ValueError("requirement failed: No output operations registered, so nothing to execute")
            planner = _Planner(self._program)
            for stream, kind, args in self._outputs:
                planner.output(kind, planner.stream(stream), args)
            if planner.needs_checkpoint and self._checkpoint is None:
                raise ValueError(
                    "requirement failed: The checkpoint directory has not been set. Please set it by "
                    "StreamingContext.checkpoint()."
                )
            job = _native.Job(self._sc.appName, self._batch_ms, self._sc.defaultParallelism, self._checkpoint,
                              self._manual_clock())
            if self._listeners:
                job.listen(_ListenerBus(self._listeners))
            if self._program.functions:
                job.runner(self._program.encode())
            for step in planner.steps:
                if step[0] == "source":
                    job.source(step[1], step[2])
                elif step[0] == "op":
                    job.op(step[1], step[2], step[3])
                elif step[1] == "foreach":
                    name, callback = step[3]
                    job.foreach(step[2], name, callback)
                else:
                    prefix, suffix = step[3]
                    job.save_text(step[2], os.fspath(prefix), suffix)
            if self._remember_ms:
                job.remember(self._remember_ms)
            job.start()
            self._job = job
            self._planned = planner.ids
            StreamingContext._activeContext = self

    def awaitTermination(self, timeout=None):
        """Waits until the job ends (or ``timeout`` seconds); raises
        :class:`StreamingError` if it failed."""
        self.awaitTerminationOrTimeout(timeout)

    def awaitTerminationOrTimeout(self, timeout):
        """Whether the job ended within ``timeout`` seconds (raises
        :class:`StreamingError` if it failed)."""
        if self._job is None:
            raise ValueError("StreamingContext has not been started yet")
        try:
            return self._job.await_termination(timeout)
        except RuntimeError as e:
            raise StreamingError(str(e)) from None

    def stop(self, stopSparkContext=True, stopGraceFully=False):
        """Stops the job (after the batch in progress) and, by default, the
        SparkContext."""
        with StreamingContext._lock:
            self._stopped = True
            job, self._job = self._job, None
            # What ran stays readable (``DStream.slice`` after the run).
            self._ran = job or self._ran
            if StreamingContext._activeContext is self:
                StreamingContext._activeContext = None
        try:
            if job is not None:
                job.stop(bool(stopGraceFully))
        except RuntimeError as e:
            raise StreamingError(str(e)) from None
        finally:
            if stopSparkContext:
                self._sc.stop()

    @classmethod
    def getActive(cls):
        return cls._activeContext

    @classmethod
    def getActiveOrCreate(cls, checkpointPath, setupFunc):
        return cls._activeContext or cls.getOrCreate(checkpointPath, setupFunc)

    @classmethod
    def getOrCreate(cls, checkpointPath, setupFunc):
        """``setupFunc()`` builds the context; with its checkpoint directory
        ``checkpointPath`` the job resumes from the last checkpoint there."""
        ssc = setupFunc()
        if ssc._checkpoint is None:
            ssc.checkpoint(checkpointPath)
        return ssc
