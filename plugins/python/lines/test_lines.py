import socket
import threading
import unittest

import lines


class Test(unittest.TestCase):
    def test_reads_whole_lines_from_a_server(self):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]

        def feed():
            conn, _ = server.accept()
            conn.sendall(b"a b\r\nc")
            conn.sendall(b"\nd\n")
            conn.close()

        feeder = threading.Thread(target=feed)
        feeder.start()
        r = lines.tcp_lines({"address": f"127.0.0.1:{port}"})
        got = []
        while len(got) < 3:
            got += r.poll(2, 100)
        feeder.join()
        server.close()
        r.stop()
        self.assertEqual(got, ["a b", "c", "d"])

    def test_a_missing_address_is_a_key_error(self):
        with self.assertRaises(KeyError):
            lines.tcp_lines({})


if __name__ == "__main__":
    unittest.main()
