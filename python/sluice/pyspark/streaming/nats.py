"""NATS JetStream (no PySpark API has one; this one is shaped like
``KafkaUtils``): Sluice's direct JetStream source, each batch a range of
the stream's sequence numbers, messages acknowledged when the batch's
checkpoint commits (the README's "NATS JetStream" section).

    from sluice.pyspark.streaming.nats import NatsUtils
    lines = NatsUtils.createStream(ssc, "nats://127.0.0.1:4222", "LINES", subject="lines.>")
"""

from ._brokers import broker_stream

__all__ = ["NatsUtils"]


class NatsUtils:
    @staticmethod
    def createStream(ssc, servers, stream, subject=None, durable=None, start=None, keyed=False, **settings):
        """The messages of JetStream stream ``stream`` (only ``subject``'s,
        if given) as UTF-8 text, or ``(subject, text)`` pairs with
        ``keyed``. ``start`` (without a checkpoint): ``"all"``, ``"new"``,
        a sequence number or an RFC 3339 time. Any other setting of the
        source (``user``, ``password``, ``token``, ``credentials``,
        ``tls``, ``ca``, ``max_rate``, ``decoder``, ``on_undecodable``, ...)
        passes as a keyword."""
        if not isinstance(servers, str):
            servers = ",".join(servers)
        spec = {"type": "nats", "url": servers, "stream": stream, "element": "keyed" if keyed else "value"}
        for field, value in (("subject", subject), ("durable", durable), ("start", start)):
            if value is not None:
                spec[field] = value
        spec.update(settings)
        return broker_stream(ssc, spec)
