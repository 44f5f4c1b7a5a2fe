"""Kafka: PySpark 2's ``KafkaUtils.createDirectStream`` (PySpark 3 dropped
its DStream Kafka API; this is the same call) on Sluice's direct Kafka
source: each batch is a set of offset ranges, logged before the batch
runs, so a restarted job with a checkpoint re-reads exactly the same
records (the README's "Kafka" section has the guarantees and the settings).

    from sluice.pyspark.streaming.kafka import KafkaUtils
    pairs = KafkaUtils.createDirectStream(ssc, ["lines"], {"metadata.broker.list": "127.0.0.1:9092"})
"""

from ._brokers import broker_stream

__all__ = ["KafkaUtils", "TopicAndPartition", "OffsetRange", "utf8_decoder"]


def utf8_decoder(s):
    """PySpark's default decoder: UTF-8 bytes as text (``None`` stays)."""
    if s is None:
        return None
    return s.decode("utf-8")


class TopicAndPartition:
    """A topic and one of its partitions (a ``fromOffsets`` key)."""

    def __init__(self, topic, partition):
        self.topic = topic
        self.partition = int(partition)

    def __eq__(self, other):
        return isinstance(other, TopicAndPartition) and (self.topic, self.partition) == (
            other.topic,
            other.partition,
        )

    def __hash__(self):
        return hash((self.topic, self.partition))

    def __repr__(self):
        return f"TopicAndPartition({self.topic!r}, {self.partition})"


class OffsetRange:
    """A range of offsets of one topic-partition."""

    def __init__(self, topic, partition, fromOffset, untilOffset):
        self.topic, self.partition = topic, int(partition)
        self.fromOffset, self.untilOffset = int(fromOffset), int(untilOffset)

    def __repr__(self):
        return (
            f"OffsetRange(topic: {self.topic}, partition: {self.partition}, range: "
            f"[{self.fromOffset} -> {self.untilOffset}])"
        )


# Consumer properties Sluice sets itself, from the source's own settings.
_OWNED = {"metadata.broker.list", "bootstrap.servers", "group.id", "auto.offset.reset"}
_RESET = {"smallest": "earliest", "earliest": "earliest", "largest": "latest", "latest": "latest"}


class KafkaUtils:
    @staticmethod
    def createDirectStream(ssc, topics, kafkaParams, fromOffsets=None, keyDecoder=utf8_decoder,
                           valueDecoder=utf8_decoder, messageHandler=None):
        """A stream of ``(key, value)`` pairs from ``topics``: keys and
        values as UTF-8 text (a key that is not text stays bytes; no key:
        ``None``). ``kafkaParams`` needs ``metadata.broker.list`` (or
        ``bootstrap.servers``); ``group.id`` is where offsets are committed
        after each checkpoint, ``auto.offset.reset`` (``smallest`` /
        ``largest``) where a job without a checkpoint or group offsets
        starts, and the other properties go to librdkafka as they are.
        ``fromOffsets`` (``{TopicAndPartition: offset}``) starts there."""
        if keyDecoder is not utf8_decoder or valueDecoder is not utf8_decoder or messageHandler is not None:
            raise NotImplementedError(
                "createDirectStream with other decoders or a messageHandler: records arrive as UTF-8 "
                "text; decode further with map (which runs sandboxed)"
            )
        brokers = kafkaParams.get("metadata.broker.list") or kafkaParams.get("bootstrap.servers")
        if not brokers:
            raise ValueError("kafkaParams needs metadata.broker.list (or bootstrap.servers): the brokers to read")
        if isinstance(topics, str):
            topics = [topics]
        settings = {"type": "kafka", "brokers": brokers, "topics": list(topics), "element": "keyed"}
        if kafkaParams.get("group.id"):
            settings["group_id"] = kafkaParams["group.id"]
        reset = kafkaParams.get("auto.offset.reset")
        if reset is not None:
            if reset not in _RESET:
                raise ValueError(f"auto.offset.reset must be one of {sorted(_RESET)}, not {reset!r}")
            settings["start"] = _RESET[reset]
        if fromOffsets:
            settings["start"] = {f"{tp.topic}:{tp.partition}": int(o) for tp, o in fromOffsets.items()}
        properties = {k: str(v) for k, v in kafkaParams.items() if k not in _OWNED}
        if properties:
            settings["properties"] = properties
        return broker_stream(ssc, settings)
