"""MQTT: Apache Bahir's ``MQTTUtils.createStream`` (the MQTT DStream
PySpark programs use) on Sluice's MQTT receiver: a persistent session at
QoS 1, each message acknowledged to the broker only once it is in the
write-ahead log when the job checkpoints (the README's "MQTT" section).

    from sluice.pyspark.streaming.mqtt import MQTTUtils
    lines = MQTTUtils.createStream(ssc, "tcp://127.0.0.1:1883", "devices/+/log")

A payload is UTF-8 text; one with several lines gives one element per line.
"""

from ._brokers import broker_stream

__all__ = ["MQTTUtils"]


def _settings(brokerUrl, topics, element):
    url = brokerUrl
    for paho, ours in (("tcp://", "mqtt://"), ("ssl://", "mqtts://")):
        if url.startswith(paho):
            url = ours + url[len(paho):]
    return {"type": "mqtt", "url": url, "topics": list(topics), "element": element}


class MQTTUtils:
    @staticmethod
    def createStream(ssc, brokerUrl, topic, storageLevel=None):
        """The messages of ``topic`` (``+`` and ``#`` wildcards) as text.
        ``brokerUrl``: ``tcp://host:port`` (as Paho writes it),
        ``mqtt://`` or ``mqtts://`` (TLS)."""
        return broker_stream(ssc, _settings(brokerUrl, [topic], "value"))

    @staticmethod
    def createPairedStream(ssc, brokerUrl, topics, storageLevel=None):
        """``(topic, message)`` pairs of the messages of every topic of
        ``topics``."""
        return broker_stream(ssc, _settings(brokerUrl, topics, "keyed"))
