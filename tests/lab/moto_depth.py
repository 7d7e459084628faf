"""What one SQS call costs in the lab's moto as its FIFO queue deepens.

Starts moto through the lab's launcher (tests/lab/src/moto_fifo.py) on a
loopback port of its own, fills one FIFO queue (300 groups, 600-byte
bodies, as the drill's backlog) and prints SendMessage p50/p99 per 500
messages, then one 10-message receive and one GetQueueAttributes at the
final depth. `make bench-moto` runs it (MESSAGES=N, default 3000).

Run as: .venv/bin/python tests/lab/moto_depth.py [MESSAGES]
"""

import os
import re
import statistics
import subprocess
import sys
import threading
import time

import boto3

HERE = os.path.dirname(os.path.abspath(__file__))
launcher = open(os.path.join(HERE, "src", "moto_fifo.py")).read()
moto = subprocess.Popen(
    [sys.executable, "-c", launcher, "-H", "127.0.0.1", "-p", "0"],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
)
try:
    url = None
    deadline = time.monotonic() + 60
    for line in moto.stderr:
        found = re.search(r"Running on (http://\S+)", line)
        if found:
            url = found.group(1)
            break
        if time.monotonic() > deadline:
            break
    if url is None:
        sys.exit("moto did not say where it listens within 60 s")
    threading.Thread(target=lambda: [None for _ in moto.stderr], daemon=True).start()

    sqs = boto3.client(
        "sqs", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench"
    )
    queue = sqs.create_queue(QueueName="bench.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    print(f"moto {url}: SendMessage to one FIFO queue, by depth")
    print(f"{'depth':>6} {'p50 ms':>8} {'p99 ms':>8}")
    window = []
    for i in range(total):
        started = time.perf_counter()
        sqs.send_message(
            QueueUrl=queue, MessageBody="x" * 600, MessageGroupId=f"g{i % 300}", MessageDeduplicationId=f"d{i}"
        )
        window.append((time.perf_counter() - started) * 1000)
        if len(window) == 500 or i + 1 == total:
            window.sort()
            p99 = window[min(len(window) - 1, int(len(window) * 0.99))]
            print(f"{i + 1:>6} {statistics.median(window):>8.1f} {p99:>8.1f}")
            window = []
    started = time.perf_counter()
    got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    print(f"ReceiveMessage of {len(got)} at depth {total}: {(time.perf_counter() - started) * 1000:.1f} ms")
    started = time.perf_counter()
    sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])
    print(f"GetQueueAttributes at depth {total}: {(time.perf_counter() - started) * 1000:.1f} ms")
finally:
    moto.kill()
    moto.wait()
