"""The pre-warm sync's throughput and memory: `failsoft sync --once --full`
of N generated customers (crm-sim's `/admin/customers/generate`) into the
native edge and a DynamoDB last-known table, timed, with the `failsoft`
process's resident memory sampled every 200 ms from /proc.

DynamoDB is moto's (the lab's launcher, IAM off: this measures the sync,
not the check), or with DYNALITE=path/to/dynalite the faster dynalite (npm,
in memory). `make bench-sync` runs it (CUSTOMERS=N, default 1000000;
RATE=pages per second, default 50; PAGE=records per page, default 1000;
DYNAMO=dynalite installs and uses dynalite).

Run as: .venv/bin/python tests/lab/sync_bench.py [CUSTOMERS] [RATE] [PAGE]
"""

import hashlib
import hmac
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import boto3

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, os.environ.get("BENCH_PROFILE", "release"))
SECRET = "bench-only-internal-secret-00000"
KEY_SECRET = "bench-only-cache-key-secret-0000"

count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
rate = sys.argv[2] if len(sys.argv) > 2 else "50"
page = sys.argv[3] if len(sys.argv) > 3 else "1000"
procs = []


def start(argv, env, marker):
    """Starts a program and returns (process, the line that says where it listens)."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs.append(proc)
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if marker in line:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, line
        if time.monotonic() > deadline:
            break
    sys.exit(f"{argv[0]} did not start: no {marker!r} within 60 s")


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAILSOFT_", "AWS_", "CRM_SIM_"))}
    env.update({"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
    env.update(extra)
    return env


try:
    dynalite = os.environ.get("DYNALITE")
    if dynalite:
        # A faster stand-in for throughput runs: dynalite (npm, in memory).
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        start([dynalite, "--port", str(port), "--host", "127.0.0.1"], clean_env(), "listening")
        moto = f"http://127.0.0.1:{port}"
        store = "dynalite"
    else:
        launcher = open(os.path.join(HERE, "src", "moto_fifo.py")).read()
        _, line = start([sys.executable, "-c", launcher, "-H", "127.0.0.1", "-p", "0"], clean_env(), "Running on")
        moto = re.search(r"Running on (http://\S+)", line).group(1)
        store = "moto"
    _, line = start([os.path.join(BIN, "crm-sim")], clean_env(RUST_LOG="warn"), "crm-sim listening")
    urls = dict(re.findall(r"(\w+)=(http://\S+)", line))
    crm, admin = urls["api"], urls["admin"]
    edge_env = clean_env(
        FAILSOFT_CRM_URL=crm,
        FAILSOFT_CACHE_KEY_SECRET=KEY_SECRET,
        FAILSOFT_WEBHOOK_SECRET="bench-only-webhook-secret-000000",
        FAILSOFT_AUTH_TOKEN="bench-only-token",
        FAILSOFT_INTERNAL_SECRET=SECRET,
        FAILSOFT_DEV_LOCAL_QUEUE="true",
        FAILSOFT_LOG="warn",
    )
    edge_proc, line = start([os.path.join(BIN, "failsoft-edge"), "--listen", "127.0.0.1:0"], edge_env, "listening")
    edge = re.search(r"(http://127\.0\.0\.1:\d+)", line).group(1)

    ddb = boto3.client("dynamodb", endpoint_url=moto, region_name="us-east-1",
                       aws_access_key_id="bench", aws_secret_access_key="bench")
    for table, key in [("bench-results", "correlationId"), ("bench-last-known", "entityKey")]:
        ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                         KeySchema=[{"AttributeName": key, "KeyType": "HASH"}])
        # dynalite creates a table in the background, as DynamoDB does.
        ddb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 30})

    started = time.monotonic()
    for first in range(0, count, 250_000):
        body = json.dumps({"count": min(250_000, count - first), "first": first}).encode()
        request = urllib.request.Request(f"{admin}/admin/customers/generate", body,
                                         {"content-type": "application/json"})
        urllib.request.urlopen(request, timeout=300).read()
    print(f"crm-sim: {count:,} customers generated in {time.monotonic() - started:.1f} s")

    sync_env = clean_env(
        AWS_ENDPOINT_URL=moto, AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench", AWS_EC2_METADATA_DISABLED="true",
        FAILSOFT_CRM_URL=crm, FAILSOFT_EDGE_URL=edge, FAILSOFT_INTERNAL_SECRET=SECRET,
        FAILSOFT_CACHE_KEY_SECRET=KEY_SECRET, FAILSOFT_RESULTS_TABLE="bench-results",
        FAILSOFT_LAST_KNOWN_TABLE="bench-last-known", FAILSOFT_SYNC_RATE=rate,
        FAILSOFT_SYNC_PAGE_SIZE=page, FAILSOFT_LOG="warn",
    )
    started = time.monotonic()
    sync = subprocess.Popen([os.path.join(BIN, "failsoft"), "sync", "--once", "--full"], env=sync_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples = []
    while sync.poll() is None:
        value = rss_mib(sync.pid)
        if value is not None:
            samples.append(value)
        time.sleep(0.2)
    took = time.monotonic() - started
    out, err = sync.communicate()
    if sync.returncode != 0:
        sys.exit(f"failsoft sync failed ({sync.returncode}): {err[-2000:]}")
    report = json.loads(out)
    edge_rss = rss_mib(edge_proc.pid)
    metrics = urllib.request.urlopen(f"{edge}/metrics", timeout=30).read().decode()
    stored = sum(float(v) for v in re.findall(r'failsoft_edge_synced_total\{outcome="stored"\} (\S+)', metrics))
    print(f"failsoft sync --once --full: {report['records']:,} records, {report['pages']:,} pages of {page}, "
          f"pace {rate} pages/s")
    print(f"  {took:.1f} s wall · {report['records'] / took:,.0f} records/s")
    print(f"  worker RSS: max {max(samples):.1f} MiB, median {sorted(samples)[len(samples) // 2]:.1f} MiB "
          f"({len(samples)} samples every 200 ms)")
    print(f"  edge: {stored:,.0f} records stored (native host RSS {edge_rss:.0f} MiB)")
    # Sampled in DynamoDB by the edge's own key (HMAC-SHA-256 of the number).
    sampled = [0, count // 3, count // 2, count - 1]
    found = 0
    for i in sampled:
        key = hmac.new(KEY_SECRET.encode(), f"+1555{i:07}".encode(), hashlib.sha256).hexdigest()
        item = ddb.get_item(TableName="bench-last-known", Key={"entityKey": {"S": key}}).get("Item")
        found += item is not None and f"G-{i:07}" in item["entry"]["S"]
    print(f"  DynamoDB ({store}): {found} of {len(sampled)} sampled records found by their key")
finally:
    for proc in procs:
        proc.kill()
