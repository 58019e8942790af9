"""Load on ``segkit.serve``: concurrent clients on loopback posting 512x512 images, with and without batching.

    NO_ALBUMENTATIONS_UPDATE=1 python benchmarks/serve_load.py --ckpt outputs/quickstart/<run>
        [--clients 8] [--requests 96] [--batch-sizes 1 4] [--size 512]

For each server-side ``max_batch_size`` a fresh ``python -m segkit.serve`` starts on a free port (CPU, one
worker, ``tile=[size,size]``: one tile an image), is warmed up, then ``--clients`` threads post
``--requests`` PNGs in all (one request at a time each) and every latency is recorded: requests/s, p50 and p95.
For comparison, ``Predictor`` alone in this process: seconds per image one at a time, and per image when
``--clients`` images go through :meth:`Predictor.logits_many` together. Bounded by count, and each request by
a 120 s timeout; the servers are stopped at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segkit.inference import Predictor


def png(size: int, seed: int) -> bytes:
    array = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def post(url: str, image: bytes) -> float:
    """Seconds for one ``POST /predict`` (multipart form) answered 200."""
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()
        assert response.status == 200
    return time.perf_counter() - start


def start_server(ckpt: str, size: int, batch: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "segkit.serve", f"ckpt={ckpt}", f"port={port}", "device=cpu",
               f"tile=[{size},{size}]", f"max_batch_size={batch}", "batch_timeout=0.02", "max_pixels=4000000",
               f"output=outputs/serve_load/batch{batch}"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=5).status == 200:
                return process, url
        except OSError:
            time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError("the server did not start in 180 s")


def load(url: str, images: list[bytes], clients: int, requests: int) -> dict:
    for image in images[:2]:  # warm-up
        post(f"{url}/predict", image)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        latencies = list(pool.map(lambda i: post(f"{url}/predict", images[i % len(images)]), range(requests)))
    wall = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=20)
    return {"requests_per_s": requests / wall, "p50_s": statistics.median(latencies), "p95_s": q[18]}


def predictor_alone(ckpt: str, size: int, clients: int, rounds: int = 5) -> dict:
    predictor = Predictor(ckpt, tile=[size, size], device="cpu")
    images = [predictor.decode(png(size, seed)) for seed in range(clients)]
    predictor.logits(images[0])  # warm-up
    one = []
    for _ in range(rounds):
        start = time.perf_counter()
        predictor.logits(images[0])
        one.append(time.perf_counter() - start)
    many = []
    for _ in range(rounds):
        start = time.perf_counter()
        predictor.logits_many(images)
        many.append((time.perf_counter() - start) / clients)
    return {"one_at_a_time_s": statistics.median(one), "batched_per_image_s": statistics.median(many),
            "describe": predictor.describe()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="a run directory, .ckpt or model folder to serve")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.clients} clients, {args.requests} "
          f"requests of {args.size}x{args.size} PNGs", flush=True)  # fmt: skip
    images = [png(args.size, seed) for seed in range(8)]
    results = {}
    for batch in args.batch_sizes:
        process, url = start_server(args.ckpt, args.size, batch)
        try:
            results[f"server, max_batch_size={batch}"] = load(url, images, args.clients, args.requests)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        row = results[f"server, max_batch_size={batch}"]
        print(f"  max_batch_size={batch}: {row['requests_per_s']:.2f} requests/s, p50 {row['p50_s'] * 1000:.0f} ms, "
              f"p95 {row['p95_s'] * 1000:.0f} ms", flush=True)  # fmt: skip
    alone = predictor_alone(args.ckpt, args.size, args.clients)
    results["predictor alone"] = alone
    print(
        f"  Predictor alone ({alone['describe']}): {alone['one_at_a_time_s'] * 1000:.0f} ms an image one at a "
        f"time, {alone['batched_per_image_s'] * 1000:.0f} ms an image in batches of {args.clients}",
        flush=True,
    )
    out = Path("outputs/serve_load/results.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"results in {out}")


if __name__ == "__main__":
    main()
