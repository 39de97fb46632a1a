"""Load test of `minivgg serve` on loopback: requests per second, latency, and the server's
resident memory after a warm-up and after each phase (--requests predictions on one keep-alive
connection, then as many over --clients connections), each a drawn digit as the page sends it.
Writes benchmarks/results/serve/load.json and, from it, BENCHMARKS.md's serve section.

    python benchmarks/serve_load.py                 # 1,000 + 1,000 predictions, mnist_20k
    python benchmarks/serve_load.py --render-only   # or --check: is the section stale?
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import io
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import common
import numpy as np

from minivgg.run_record import machine

DEFAULT_MODEL = common.ROOT / "tests" / "data" / "mnist_20k_digits.safetensors"
DEFAULT_OUT = common.ROOT / "benchmarks" / "results" / "serve" / "load.json"


def drawn_digits(count: int, seed: int = 0) -> list[bytes]:
    """PNGs of strokes on a white 280x280 canvas (ones, sevens and zeros, placed at random)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        img = Image.new("RGB", (280, 280), "white")
        draw = ImageDraw.Draw(img)
        x, y = rng.integers(60, 220), rng.integers(60, 220)
        width = int(rng.integers(14, 26))
        kind = i % 3
        if kind == 0:
            draw.line([(x, y - 70), (x + rng.integers(-15, 15), y + 70)], fill="black", width=width)
        elif kind == 1:
            draw.line([(x - 50, y - 60), (x + 50, y - 60), (x - 10, y + 70)], fill="black", width=width)
        else:
            draw.ellipse([x - 45, y - 65, x + 45, y + 65], outline="black", width=width)
        buffer = io.BytesIO()
        img.save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


def rss_mib(pid: int) -> float:
    return common.status_kib("VmRSS", pid) / 1024


def rss_parts_mib(pid: int) -> dict | None:
    """The resident memory of `pid` by kind (/proc/PID/smaps): LLVM's library (the code Numba
    runs its compiled kernels through), other mapped files (libraries), anonymous memory."""
    parts = {"llvm_library": 0, "other_files": 0, "anonymous": 0}
    kind = None
    try:
        with open(f"/proc/{pid}/smaps") as smaps:
            for line in smaps:
                fields = line.split()
                if not fields[0].endswith(":"):  # a mapping's header: range, perms, ..., path
                    path = fields[5] if len(fields) > 5 else ""
                    kind = ("llvm_library" if "libllvmlite" in path else
                            "other_files" if path.startswith("/") else "anonymous")
                elif fields[0] == "Rss:":
                    parts[kind] += int(fields[1])
    except OSError:
        return None
    return {kind: round(kib / 1024, 1) for kind, kib in parts.items()}


def run_requests(host: str, port: int, images: list[bytes], count: int, offset: int = 0) -> list[float]:
    """`count` predictions one after another on one connection; their latencies in seconds."""
    connection = http.client.HTTPConnection(host, port, timeout=60)
    latencies = []
    try:
        for i in range(count):
            start = time.perf_counter()
            connection.request("POST", "/api/predict", body=images[(offset + i) % len(images)],
                               headers={"Content-Type": "image/png"})
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"request {i}: {response.status} {body[:200]!r}")
            latencies.append(time.perf_counter() - start)
    finally:
        connection.close()
    return latencies


def summary(latencies: list[float], seconds: float) -> dict:
    ms = np.asarray(latencies) * 1000
    return {"requests": len(latencies), "seconds": round(seconds, 2),
            "requests_per_second": round(len(latencies) / seconds, 2),
            "median_ms": round(float(np.median(ms)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "first_100_median_ms": round(float(np.median(ms[:100])), 1),
            "last_100_median_ms": round(float(np.median(ms[-100:])), 1)}


def start_server(model: Path) -> tuple[subprocess.Popen, str, int]:
    """`python -m minivgg serve MODEL --port 0`, and the host and port it says it listens on."""
    env = {**os.environ, "PYTHONPATH": str(common.ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = subprocess.Popen([sys.executable, "-m", "minivgg", "serve", str(model), "--port", "0"],
                              cwd=common.ROOT, env=env, stdout=subprocess.PIPE, text=True)
    for _ in range(5):
        match = re.search(r"open http://([\d.]+):(\d+)/", server.stdout.readline())
        if match:
            return server, match.group(1), int(match.group(2))
    server.terminate()
    server.wait(timeout=30)
    raise RuntimeError("the server did not say where it listens")


def concurrently(host: str, port: int, images: list[bytes], count: int, clients: int):
    """`count` predictions over `clients` connections at once: (their latencies, seconds)."""
    share = count // clients
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        parts = list(pool.map(lambda k: run_requests(host, port, images, share, offset=k * 7),
                              range(clients)))
    return [t for part in parts for t in part], time.perf_counter() - start


def measure(model: Path, requests: int, warmup: int, clients: int) -> dict:
    server, host, port = start_server(model)
    try:
        images = drawn_digits(50)
        run_requests(host, port, images, warmup)
        rss = {"after_warmup": rss_mib(server.pid)}
        start = time.perf_counter()
        sequential = run_requests(host, port, images, requests)
        sequential_seconds = time.perf_counter() - start
        rss["after_sequential"] = rss_mib(server.pid)
        concurrent, concurrent_seconds = concurrently(host, port, images, requests, clients)
        rss["after_concurrent"] = rss_mib(server.pid)
        rss_parts = rss_parts_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "url": f"http://{host}:{port}/", "warmup": warmup,
        "sequential": summary(sequential, sequential_seconds),
        "concurrent": {**summary(concurrent, concurrent_seconds), "clients": clients},
        "rss_mib": {phase: round(mib, 1) for phase, mib in rss.items()},
        "rss_parts_mib": rss_parts,
    }


def render(record: dict) -> str:
    s, c, rss = record["sequential"], record["concurrent"], record["rss_mib"]
    m = record["machine"]
    return "\n" + "\n".join([
        "<!-- generated by `python benchmarks/serve_load.py` (or `--render-only`) from "
        "benchmarks/results/serve/load.json: do not edit by hand -->",
        "",
        f"`{record['command']}` on {record['date']} (commit {record['commit']}): "
        f"`minivgg serve {record['model']}` on loopback, {m['cpu']}, {m['cpu_count']} cores; "
        f"load average (1 min) {record['load_average'][0]:.2f} at start, "
        f"{record['load_average'][1]:.2f} at end. Each request is a 280x280 PNG of a drawn digit; "
        f"the answer holds the top classes, the preprocessed image and every conv layer's feature "
        f"maps as PNGs. {record['warmup']} predictions warm the server up first.",
        "",
        "| phase | predictions | requests/s | median ms | p95 ms | first 100: median ms | "
        "last 100: median ms | server RSS after (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| after warm-up | | | | | | | {rss['after_warmup']:.1f} |",
        f"| one after another, 1 connection | {s['requests']:,} | {s['requests_per_second']:.1f} | "
        f"{s['median_ms']:.1f} | {s['p95_ms']:.1f} | {s['first_100_median_ms']:.1f} | "
        f"{s['last_100_median_ms']:.1f} | {rss['after_sequential']:.1f} |",
        f"| {c['clients']} concurrent connections | {c['requests']:,} | {c['requests_per_second']:.1f} | "
        f"{c['median_ms']:.1f} | {c['p95_ms']:.1f} | {c['first_100_median_ms']:.1f} | "
        f"{c['last_100_median_ms']:.1f} | {rss['after_concurrent']:.1f} |",
        "",
        "The model runs one prediction at a time (behind a lock); decoding the upload and "
        "encoding the answer's PNGs run in each connection's own thread, outside it."
        + (f" Of the last RSS, {parts['llvm_library']:.1f} MiB are pages of LLVM's library "
           f"(libllvmlite.so, through which Numba loads and runs the compiled kernels; file-backed, "
           f"shared by every process that maps it), {parts['other_files']:.1f} MiB other libraries "
           f"and files, {parts['anonymous']:.1f} MiB anonymous memory (Python, NumPy, the model, "
           f"Numba's and LLVM's data)." if (parts := record.get("rss_parts_mib")) else "")
        + (f" The load average above {m['cpu_count']} means other processes shared the cores: "
           f"these figures are lower bounds for a quiet machine." if record["load_average"][0]
           > m["cpu_count"] else ""),
    ]) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--clients", type=int, default=4)
    common.add_section_options(parser, DEFAULT_OUT)
    args = parser.parse_args(argv)

    def run() -> dict:
        load_start = os.getloadavg()[0]
        record = measure(args.model, args.requests, args.warmup, args.clients)
        record.update({
            "command": "python benchmarks/serve_load.py" + (" " + " ".join(argv or sys.argv[1:])).rstrip(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "commit": common.short_commit(), "model": common.relative(args.model),
            "machine": machine(), "load_average": [load_start, os.getloadavg()[0]],
        })
        print(json.dumps(record, indent=1))
        return record

    return common.section_main(args, "serve", "serve_load.py", render, run)


if __name__ == "__main__":
    sys.exit(main())
