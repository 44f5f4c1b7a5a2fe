"""A line-protocol TCP receiver in Python: connects to `address`
(`ip:port`, which the job must grant the plugin with `connect`), reads
newline-terminated records and gives them to the host, one element each.
The connection is made again after it drops (the host retries the poll)."""

import socket

import sluice


@sluice.receiver
class tcp_lines:
    """Lines read from a TCP server (`address` = host:port)."""

    def __init__(self, settings):
        host, _, port = settings["address"].rpartition(":")
        self.address = (host, int(port))
        self.max_line = int(settings.get("max_line_bytes", "1048576"))
        self.sock = None
        self.pending = b""

    def _connect(self):
        # An IP address: no name lookup (the sandbox grants none).
        sock = socket.socket(socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET)
        sock.settimeout(5)
        try:
            sock.connect(self.address)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        sluice.info(f"connected to {self.address[0]}:{self.address[1]}")

    def poll(self, max_records, wait_ms):
        ready = self._take(max_records)
        if ready:
            return ready
        if self.sock is None:
            self._connect()
        self.sock.settimeout(wait_ms / 1000)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return []
        except OSError:
            self.stop()
            raise
        if not data:
            self.stop()
            raise ConnectionResetError(f"{self.address[0]}:{self.address[1]} closed the connection")
        self.pending += data
        return self._take(max_records)

    def _take(self, max_records):
        """Up to ``max_records`` whole lines out of what was read."""
        *lines, rest = self.pending.split(b"\n")
        taken, left = lines[:max_records], lines[max_records:]
        self.pending = b"".join(line + b"\n" for line in left) + rest
        if not taken and len(self.pending) > self.max_line:
            raise sluice.Refuse(f"a line longer than {self.max_line} bytes")
        return [line.decode("utf-8", "replace").rstrip("\r") for line in taken]

    def stop(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


Operator = sluice.export(tcp_lines, name="lines", version="0.1.0")
Receiver = Operator.Receiver
