"""``python -m client.soak``: a bounded soak test, not part of CI.

N gRPC streams ask questions back to back for M minutes (majority_vote, best_of_n and
beam_search in turn, seeds varying); every request must end with an answer or an error,
none may be lost (no final response within its timeout). The resident memory of
tritonserver and every stub under it is sampled along the way; the report compares the
first minute after warm-up with the last. Starts its own server unless --grpc-url is given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from .api import ScaffoldingClient, ScaffoldingError

QUESTIONS_FILE = Path(__file__).resolve().parent.parent / "data" / "test.jsonl"
METHODS = [
    ("majority_vote", {"samples": 8, "max_tokens": 128}),
    ("best_of_n", {"samples": 4, "max_tokens": 128}),
    ("beam_search", {"samples": 4, "beam_width": 2, "max_tokens": 64}),
]


def resident_bytes(root_pid: int) -> int:
    """RSS of a process and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(stat[1]), []).append(int(entry.name))
            rss[int(entry.name)] = int(stat[21]) * 4096
        except (OSError, ValueError, IndexError):
            continue
    total, pending = 0, [root_pid]
    while pending:
        pid = pending.pop()
        total += rss.get(pid, 0)
        pending.extend(children.get(pid, []))
    return total


def soak(
    grpc_url: str, server_pid: int | None, *, streams: int, seconds: float, timeout_s: float
) -> dict:
    questions = [
        json.loads(line)["question"] for line in QUESTIONS_FILE.read_text().splitlines()[:200]
    ]
    outcomes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def stream(index: int) -> None:
        with ScaffoldingClient(grpc_url, "grpc") as client:
            count = 0
            while time.monotonic() < stop_at:
                method, params = METHODS[(index + count) % len(METHODS)]
                question = questions[(index * 7 + count) % len(questions)]
                started = time.monotonic()
                try:
                    client.ask(
                        question, method, params, seed=index * 1000 + count, timeout_s=timeout_s
                    )
                    outcome = "ok"
                except ScaffoldingError as error:
                    outcome = "lost" if "no response within" in str(error) else "error"
                    with lock:
                        errors[str(error)[:120]] += 1
                with lock:
                    outcomes[outcome] += 1
                    latencies.append(time.monotonic() - started)
                count += 1

    threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(streams)]
    memory: list[tuple[float, int]] = []
    started = time.monotonic()
    for thread in threads:
        thread.start()
    with tqdm(total=int(seconds), unit="s", desc=f"soak, {streams} streams") as progress:
        while any(thread.is_alive() for thread in threads):
            time.sleep(5)
            elapsed = time.monotonic() - started
            if server_pid is not None:
                memory.append((elapsed, resident_bytes(server_pid)))
            progress.n = min(int(elapsed), int(seconds))
            progress.set_postfix(ok=outcomes["ok"], error=outcomes["error"], lost=outcomes["lost"])
            progress.refresh()
    report: dict = {
        "streams": streams,
        "seconds": round(time.monotonic() - started, 1),
        "requests": sum(outcomes.values()),
        "outcomes": dict(outcomes),
        "errors": dict(errors.most_common(5)),
        "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
    }
    if memory:
        # the first minute after a minute of warm-up against the last minute
        first = [m for t, m in memory if 60 <= t < 120] or [memory[0][1]]
        last = [m for t, m in memory if t >= memory[-1][0] - 60]
        report["rss_first_minute_mb"] = round(statistics.mean(first) / 2**20, 1)
        report["rss_last_minute_mb"] = round(statistics.mean(last) / 2**20, 1)
        report["rss_growth_percent"] = round(
            100 * (statistics.mean(last) / statistics.mean(first) - 1), 2
        )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m client.soak", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--grpc-url", help="a running server (default: start one; memory is sampled only then)"
    )
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds before a request counts as lost"
    )
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args(argv)
    server = None
    if args.grpc_url is None:
        from scaffolding_backend.server import DEFAULT_MODEL_REPOSITORY, TritonServer

        TritonServer.exit_on_sigterm()
        server = TritonServer(DEFAULT_MODEL_REPOSITORY).start()
        args.grpc_url = server.grpc_url
    try:
        pid = server.process.pid if server is not None and server.process is not None else None
        report = soak(
            args.grpc_url,
            pid,
            streams=args.streams,
            seconds=args.minutes * 60,
            timeout_s=args.timeout,
        )
    finally:
        if server is not None:
            server.stop()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0 if report["outcomes"].get("lost", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
