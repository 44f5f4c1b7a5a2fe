"""``StreamingListener``: subclass it and override the events you want."""


class StreamingListener:
    """PySpark's listener interface (every event a no-op by default)."""

    def onStreamingStarted(self, streamingStarted):
        pass

    def onReceiverStarted(self, receiverStarted):
        pass

    def onReceiverError(self, receiverError):
        pass

    def onReceiverStopped(self, receiverStopped):
        pass

    def onBatchSubmitted(self, batchSubmitted):
        pass

    def onBatchStarted(self, batchStarted):
        pass

    def onBatchCompleted(self, batchCompleted):
        pass

    def onOutputOperationStarted(self, outputOperationStarted):
        pass

    def onOutputOperationCompleted(self, outputOperationCompleted):
        pass
