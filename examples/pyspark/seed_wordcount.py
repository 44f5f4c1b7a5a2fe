# The seed's PySpark socket word count (the lesson's steps 1-5) on Sluice:
# the program as the lesson prints it, but for its two imports (`pyspark` ->
# `sluice.pyspark`) and its Tweeter serving the port the Streamer reads (the
# lesson's serves 4444 and reads 9999). Every lambda runs sandboxed in wasm.
#
#   pip install .            # from the repository's root
#   python examples/pyspark/seed_wordcount.py
import random
import time
from socket import *
from threading import Thread

from sluice import pyspark
from sluice.pyspark.streaming import StreamingContext

sc = pyspark.SparkContext("local[2]")

class Streamer(Thread):
    def __init__(self, sc):
        Thread.__init__(self)
        self.sc = sc

    def run(self):
        print("starting Streaming thread...")

        # Using the spark context, create a streaming context with a batch interval of 1 second
        ssc = StreamingContext(self.sc, 1)

        # Create a socket DStream reading from localhost at port 9999
        socketDstream = ssc.socketTextStream("localhost", 9999)

        # WordCount
        wordcounts = socketDstream.flatMap(lambda line: line.split(" ")) \
            .map(lambda word: (word, 1)) \
            .reduceByKey(lambda a, b: a + b)

        # Print first 50 words counted in the last one second
        wordcounts.pprint(50)

        # Start the execution
        ssc.start()

        # Stop the streaming context after 35 seconds
        time.sleep(35)
        ssc.stop()

class Tweeter(Thread):
    def run(self):
        print('starting Socket writing thread')
        HOST = 'localhost'
        PORT = 9999
        ADDR = (HOST, PORT)
        # Create an INET, Streaming socket
        serversocket = socket(AF_INET, SOCK_STREAM)
        # Bind the socket to localhost and port 9999
        serversocket.bind(ADDR)
        # Become a server socket
        serversocket.listen(SOMAXCONN)
        # Accept connections
        cSocket, addr = serversocket.accept()
        print("connection ready.Sending data")

        cSocket.send("When you and your best friend.\n\r".encode())
        time.sleep(random.randint(0, 3))
        cSocket.send("Behind every strong woman.\n\r".encode())
        time.sleep(random.randint(0, 3))
        cSocket.send("When you and your best friend.\n\r".encode())
        time.sleep(random.randint(0, 3))
        cSocket.send("Mushrooms are rich in carbohydrates and proteins.\n\r".encode())
        time.sleep(random.randint(0, 3))
        cSocket.send("Its distribution encompasses Asia.\n\r".encode())
        time.sleep(random.randint(0, 3))
        cSocket.send("The cap cuticle is thin and can be easily peeled off .\n\r".encode())
        print("Tweeting DONE :)")

Streamer(sc).start()

Tweeter().start()
