"""``SparkConf`` and ``SparkContext``: the job's settings and its entry
point. Sluice runs the job in this process: the master says how many
worker threads it gets."""

import os
import re
import threading

from .rdd import RDD

_LOCAL = re.compile(r"^local(?:\[(\*|[1-9][0-9]*)(?:\s*,\s*[0-9]+)?\])?$")


class SparkConf:
    """Key-value settings, as PySpark's (``spark.master`` and
    ``spark.app.name`` are read; the others are kept and ignored)."""

    def __init__(self, loadDefaults=True, _jvm=None, _jconf=None):
        self._conf = {}

    def set(self, key, value):
        self._conf[key] = str(value)
        return self

    def setIfMissing(self, key, value):
        self._conf.setdefault(key, str(value))
        return self

    def setMaster(self, value):
        return self.set("spark.master", value)

    def setAppName(self, value):
        return self.set("spark.app.name", value)

    def setSparkHome(self, value):
        return self.set("spark.home", value)

    def setExecutorEnv(self, key=None, value=None, pairs=None):
        for k, v in pairs or [(key, value)]:
            self.set("spark.executorEnv." + k, v)
        return self

    def setAll(self, pairs):
        for k, v in pairs:
            self.set(k, v)
        return self

    def get(self, key, defaultValue=None):
        return self._conf.get(key, defaultValue)

    def getAll(self):
        return list(self._conf.items())

    def contains(self, key):
        return key in self._conf

    def toDebugString(self):
        return "\n".join(f"{k}={v}" for k, v in self._conf.items())


def _workers(master):
    m = _LOCAL.match(master.strip())
    if not m:
        raise ValueError(
            f"master {master!r}: Sluice runs the job in this process; use local, local[N] or local[*]"
        )
    n = m.group(1)
    if n is None:
        return 1
    if n == "*":
        return os.cpu_count() or 1
    return int(n)


class SparkContext:
    """The entry point: ``SparkContext("local[2]")`` gives jobs 2 worker
    threads (``defaultParallelism``)."""

    _active_spark_context = None
    _lock = threading.RLock()

    def __init__(self, master=None, appName=None, sparkHome=None, pyFiles=None, environment=None,
                 batchSize=0, serializer=None, conf=None, gateway=None, jsc=None, profiler_cls=None,
                 udf_profiler_cls=None, memory_profiler_cls=None):
        with SparkContext._lock:
            if SparkContext._active_spark_context is not None:
                active = SparkContext._active_spark_context
                raise ValueError(
                    f"Cannot run multiple SparkContexts at once; existing SparkContext(app={active.appName}, "
                    f"master={active.master})"
                )
            self._conf = conf or SparkConf()
            if master:
                self._conf.setMaster(master)
            if appName:
                self._conf.setAppName(appName)
            self.master = self._conf.get("spark.master")
            if not self.master:
                raise ValueError("A master URL must be set in your configuration")
            self.appName = self._conf.get("spark.app.name") or "pyspark-shell"
            self.sparkHome = sparkHome
            self.environment = dict(environment or {})
            self.defaultParallelism = _workers(self.master)
            self.defaultMinPartitions = min(self.defaultParallelism, 2)
            self._log_level = "WARN"
            SparkContext._active_spark_context = self

    @classmethod
    def getOrCreate(cls, conf=None):
        with cls._lock:
            if cls._active_spark_context is None:
                cls(conf=conf or SparkConf())
            return cls._active_spark_context

    @property
    def version(self):
        return "3.5.0"

    @property
    def applicationId(self):
        return f"local-sluice-{os.getpid()}"

    def getConf(self):
        conf = SparkConf()
        conf.setAll(self._conf.getAll())
        return conf

    def setLogLevel(self, logLevel):
        """Engine logs at this level and above (``SLUICE_LOG`` wins when set)."""
        self._log_level = logLevel.upper()
        levels = {"ALL": "trace", "TRACE": "trace", "DEBUG": "debug", "INFO": "info", "WARN": "warn",
                  "ERROR": "error", "FATAL": "error", "OFF": "off"}
        if self._log_level not in levels:
            raise ValueError(f"log level {logLevel!r}: one of {', '.join(levels)}")
        os.environ.setdefault("SLUICE_LOG", levels[self._log_level])

    def parallelize(self, c, numSlices=None):
        """A local RDD of ``c`` in ``numSlices`` partitions (default: the
        workers), for ``queueStream``."""
        data = list(c)
        n = max(1, numSlices or self.defaultParallelism)
        size = len(data)
        parts = [data[i * size // n:(i + 1) * size // n] for i in range(n)]
        return RDD._of(parts, self)

    def emptyRDD(self):
        return RDD._of([], self)

    def stop(self):
        with SparkContext._lock:
            if SparkContext._active_spark_context is self:
                SparkContext._active_spark_context = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return f"<SparkContext master={self.master} appName={self.appName}>"
