"""Load test of `train.serve` on loopback: latency percentiles and requests/s under concurrent clients.

    python -m benchmarks.serve_load --model runs/quickstart/hstu --dataset runs/quickstart/data \\
        --requests 5000 --concurrency 32 --batch_wait_ms 0 2 --output benchmarks/results/serve-load-hstu.json

For each `--batch_wait_ms`, the server starts in its own process (`python -m train.serve --host 127.0.0.1`), and
`--concurrency` clients (asyncio, one keep-alive connection each, in this process) send `--requests` requests in all,
each the whole history of a dataset user (its latest `window` events with their times, users in turn), then the
server is stopped. Bounded: a run that exceeds `--timeout` seconds is stopped and reported as such. Loopback only.
Recorded per row: requests/s, p50 / p90 / p99 / max latency (ms), errors, the model calls the server made; a run cut
by `--timeout` reports the requests answered until then (`stopped_by_timeout`).
"""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from data_scripts.arguments import make_parser, parse_args, run_cli
from train.evaluation.results import provenance, write_json_atomic


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request_bodies(dataset: str, model: str, count: int, k: int, session: bool) -> list[bytes]:
    """JSON bodies of real histories: each user's latest `window` events (raw ids and times), users in turn."""
    from transformers import AutoConfig

    from data_scripts.processed import load_processed
    from data_scripts.splits import SequenceStore
    from modeling_geniusrec.recommendation import model_window

    sequences, _, tokenizer, _ = load_processed(dataset)
    store = SequenceStore.from_dataset(sequences)
    window = model_window(type("M", (), {"config": AutoConfig.from_pretrained(model)})())
    bodies = []
    for n in range(min(count, len(store.user_ids))):
        items, times = store.row(n)
        body = {"items": tokenizer.decode_items(items[-window:].tolist()), "timestamps": [int(t) for t in times[-window:]], "k": k}
        if session:
            body["session"] = True
        bodies.append(json.dumps(body).encode())
    return [bodies[i % len(bodies)] for i in range(count)]


async def client(port: int, bodies: list[bytes], latencies: list, errors: list):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for body in bodies:
            start = time.perf_counter()
            writer.write(b"POST /recommend HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


async def load(port: int, bodies: list[bytes], concurrency: int, timeout: float | None = None):
    """`(wall seconds, latencies, errors, stopped)`: every request answered, or those answered within `timeout` seconds
    (`stopped` True: the clients were cancelled there)."""
    latencies, errors = [], []
    shares = [bodies[i::concurrency] for i in range(concurrency)]
    start = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(client(port, share, latencies, errors) for share in shares if share)), timeout)
        stopped = False
    except asyncio.TimeoutError:
        stopped = True
    return time.perf_counter() - start, latencies, errors, stopped


def get(port: int, path: str) -> dict:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", path)
    return json.loads(connection.getresponse().read())


def run_one(args, batch_wait_ms: float, bodies: list[bytes]) -> dict:
    port = free_port()
    command = [sys.executable, "-m", "train.serve", "--model", args.model, "--host", "127.0.0.1", "--port", str(port),
               "--batch_wait_ms", str(batch_wait_ms), "--max_batch", str(args.max_batch)]
    if args.candidate_count:
        command += ["--candidate_count", str(args.candidate_count)]
    if args.exported:
        command += ["--exported", "true"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                get(port, "/health")
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    reason = server.stderr.read()[-2000:] if server.poll() is not None else "timeout"
                    raise RuntimeError(f"the server did not start: {reason}") from None
                time.sleep(0.2)
        asyncio.run(load(port, bodies[: args.concurrency], args.concurrency))  # warm-up: one request per client
        wall, latencies, errors, stopped = asyncio.run(load(port, bodies, args.concurrency, args.timeout))
        health = get(port, "/health")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    ms = np.asarray(latencies) * 1000
    return {"batch_wait_ms": batch_wait_ms, "requests": len(latencies), "concurrency": args.concurrency, "wall_s": round(wall, 2),
            "requests_per_s": round(len(latencies) / wall, 1), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p90_ms": round(float(np.percentile(ms, 90)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "max_ms": round(float(ms.max()), 1), "errors": len(errors), "model_calls": health["batched_calls"],
            "stopped_by_timeout": stopped, "requests_asked": len(bodies),
            "server_command": " ".join(["python", *command[1:]]).replace(str(port), "PORT")}


@dataclass
class LoadArguments:
    model: str = field(metadata={"help": "checkpoint folder to serve"})
    dataset: str = field(metadata={"help": "processed dataset whose users' histories are sent"})
    requests: int = field(default=5000, metadata={"help": "requests in all"})
    concurrency: int = field(default=32, metadata={"help": "concurrent clients (one connection each)"})
    k: int = field(default=10, metadata={"help": "items per answer"})
    session: bool = field(default=False, metadata={"help": "ask GeniusRec for generated sessions"})
    batch_wait_ms: list[float] = field(default_factory=lambda: [0.0, 2.0], metadata={"help": "server batching windows to compare", "nargs": "+"})
    max_batch: int = field(default=64, metadata={"help": "the server's --max_batch"})
    candidate_count: int | None = field(default=None, metadata={"help": "the server's --candidate_count (GeniusRec sessions)"})
    exported: bool = field(default=False, metadata={"help": "the server's --exported (the torch.export encoder)"})
    timeout: float = field(default=600, metadata={"help": "seconds a run may take before it is stopped"})
    output: str | None = field(default=None, metadata={"help": "results JSON"})


def main(argv=None):
    (args,) = parse_args(make_parser(LoadArguments, description=__doc__), argv)
    bodies = request_bodies(args.dataset, args.model, args.requests, args.k, args.session)
    rows = []
    for wait in args.batch_wait_ms:
        row = run_one(args, wait, bodies)
        rows.append(row)
        print(f"batch_wait_ms {wait:>4}: {row['requests_per_s']:7.1f} requests/s  p50 {row['p50_ms']:6.1f} ms  p99 {row['p99_ms']:6.1f} ms  "
              f"errors {row['errors']}  model calls {row['model_calls']}"
              + (f"  (stopped after {args.timeout:.0f} s: {row['requests']} of {len(bodies)} answered)" if row["stopped_by_timeout"] else ""),
              flush=True)
    if args.output:
        write_json_atomic(args.output, {"rows": rows, "model": args.model, "session": args.session, "k": args.k, "exported": args.exported,
                                        **provenance("python -m benchmarks.serve_load", argv)})
    return rows


if __name__ == "__main__":
    sys.exit(run_cli(main))
