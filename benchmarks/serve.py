"""Serving throughput: concurrent streamed generations, batching across requests on vs off.

A server process (``rnnkit.server`` under uvicorn, 127.0.0.1 only) serves one character LM —
a run folder with ``--run``, else the main job's model shape with random weights (speed does
not depend on training). The client opens ``--streams`` concurrent streaming completions of
``--tokens`` tokens each (``temperature`` 1, no seed as OpenAI clients send by default;
``--seeded`` gives each its own seed, drawn with its own generator) and reads the server-sent
events:

* aggregate tokens/s over a round (all tokens / wall time of the round);
* time to first token (request sent → first text chunk) and per-token latency (the gap between
  two chunks of one stream over the tokens the later one carries), p50 and p99;
* the server process's resident memory after each round (flat = no leak);
* the count of 5xx answers (must be 0).

Two server processes run side by side, one with batching and one with ``--no-batching``, and
the rounds alternate between them (``--rounds`` and ``--baseline-rounds``), so a slow spell of
a shared machine falls on both; the ratio is the median batched tokens/s over the median
unbatched tokens/s (target ≥ 8×), and each pair of rounds' ratio is printed too. Every request goes to loopback, and every
round is bounded by ``--round-timeout`` seconds.

    python benchmarks/serve.py                        # 64 streams × 200 tokens, ≈ 2 min
    python benchmarks/serve.py --run runs/shakespeare --streams 64 --tokens 200
    python benchmarks/serve.py --quick                # 8 streams × 20 tokens: a smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(run: str | None, port: int, batching: bool, threads: int) -> None:
    """The server process: load (or build) the model and serve it on 127.0.0.1:port."""
    import torch

    torch.set_num_threads(threads)
    from rnnkit.server import ServerSettings, serve

    if run:
        from rnnkit.api import load

        model = load(run)
    else:
        from rnnkit.data import TINY_SHAKESPEARE, bundled_path
        from rnnkit.data.vocab import Vocab
        from rnnkit.tasks.language_model import LanguageModelConfig, build_language_model

        torch.manual_seed(0)
        text = bundled_path(TINY_SHAKESPEARE).read_text(encoding="utf-8")
        model = build_language_model(LanguageModelConfig(), Vocab.build(text)).eval()
    settings = ServerSettings(batching=batching, max_concurrent=1024, request_timeout_s=600)
    serve({"lm": model}, "127.0.0.1", port, settings, log_level="warning")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def _one_stream(client, url: str, tokens: int, seed, prompt: str, out: dict) -> None:
    body = {"model": "lm", "prompt": prompt, "max_tokens": tokens, "temperature": 1.0,
            "stream": True}  # fmt: skip
    if seed is not None:
        body["seed"] = seed
    sent = time.perf_counter()
    last = None
    async with client.stream("POST", url, json=body) as r:
        if r.status_code >= 500:
            out["5xx"] += 1
        if r.status_code != 200:
            out["errors"] += 1
            await r.aread()
            return
        buffer = b""
        async for data in r.aiter_raw():  # events split by hand: a light client on 2 cores
            buffer += data
            *events, buffer = buffer.split(b"\n\n")
            now = time.perf_counter()
            for ev in events:
                if not ev.startswith(b"data: ") or ev == b"data: [DONE]":
                    continue
                text = json.loads(ev[6:])["choices"][0]["text"]
                if not text:
                    continue
                if last is None:
                    out["ttft"].append(now - sent)
                else:  # a chunk may carry several tokens (those queued while the client read)
                    out["gaps"].extend([(now - last) / len(text)] * len(text))
                last = now
                out["tokens"] += len(text)


async def _round(port: int, streams: int, tokens: int, timeout: float, first_seed) -> dict:
    import httpx

    url = f"http://127.0.0.1:{port}/v1/completions"
    out = {"ttft": [], "gaps": [], "tokens": 0, "5xx": 0, "errors": 0}
    limits = httpx.Limits(max_connections=streams + 4, max_keepalive_connections=streams + 4)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        start = time.perf_counter()
        jobs = [_one_stream(client, url, tokens, None if first_seed is None else first_seed + i,
                            "ROMEO:", out) for i in range(streams)]  # fmt: skip
        await asyncio.wait_for(asyncio.gather(*jobs), timeout)
        out["seconds"] = time.perf_counter() - start
    return out


def _wait_up(port: int, proc, limit: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not proc.is_alive():
            raise RuntimeError("the server process exited")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("the server did not come up")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class _Server:
    """One server process (batching on or off) on a free loopback port."""

    def __init__(self, args, batching: bool):
        self.batching, self.port = batching, _free_port()
        self.proc = mp.get_context("spawn").Process(
            target=_serve, args=(args.run, self.port, batching, args.threads), daemon=True
        )
        self.proc.start()

    def ready(self, args) -> None:
        _wait_up(self.port, self.proc)
        asyncio.run(_round(self.port, min(4, args.streams), 5, args.round_timeout, None))

    def round(self, args, r: int) -> dict:
        cpu = _cpu_s(self.proc.pid)
        seed = r * 1000 if args.seeded else None
        out = asyncio.run(_round(self.port, args.streams, args.tokens, args.round_timeout, seed))
        out["rss_mb"] = _rss_mb(self.proc.pid)
        out["server_cpu"] = (_cpu_s(self.proc.pid) - cpu) / out["seconds"]
        print(f"  {'batched' if self.batching else 'unbatched'} round {r + 1}: "
              f"{out['tokens'] / out['seconds']:,.0f} tokens/s, RSS {out['rss_mb']:.0f} MB, "
              f"server CPU {100 * out['server_cpu']:.0f}%", file=sys.stderr, flush=True)  # fmt: skip
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.join(10)


def measure(args) -> tuple[list[dict], list[dict]]:
    """Rounds on both servers, alternating (batched, unbatched, batched, …), so slow spells of a
    shared machine fall on both; the unbatched server stays idle while the other one runs."""
    servers = [_Server(args, True), _Server(args, False)]
    try:
        for server in servers:
            server.ready(args)
        batched, alone = [], []
        for r in range(max(args.rounds, args.baseline_rounds)):
            if r < args.rounds:
                batched.append(servers[0].round(args, r))
            if r < args.baseline_rounds:
                alone.append(servers[1].round(args, r))
        return batched, alone
    finally:
        for server in servers:
            server.stop()


def summarise(name: str, rounds: list[dict]) -> dict:
    ttft = [t for r in rounds for t in r["ttft"]]
    gaps = [g for r in rounds for g in r["gaps"]]
    rates = [r["tokens"] / r["seconds"] for r in rounds]
    rss = [r["rss_mb"] for r in rounds]
    return {
        "server": name,
        "tokens_per_s": statistics.median(rates),
        "ttft_p50_ms": 1000 * _pct(ttft, 0.5),
        "ttft_p99_ms": 1000 * _pct(ttft, 0.99),
        "token_p50_ms": 1000 * _pct(gaps, 0.5),
        "token_p99_ms": 1000 * _pct(gaps, 0.99),
        "rss_mb": rss,
        "rss_spread": (max(rss) - min(rss)) / min(rss),
        "5xx": sum(r["5xx"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
        "tokens": sum(r["tokens"] for r in rounds),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="a char-LM run folder (default: the main job's shape, random)")
    p.add_argument("--streams", type=int, default=64, help="concurrent generations (64)")
    p.add_argument("--tokens", type=int, default=200, help="tokens per generation (200)")
    p.add_argument("--rounds", type=int, default=5, help="rounds with batching (5)")
    p.add_argument("--baseline-rounds", type=int, default=5, help="rounds without batching (5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the server (1)")
    p.add_argument("--round-timeout", type=float, default=300.0, help="seconds per round (300)")
    p.add_argument("--seeded", action="store_true", help="give every request its own seed")
    p.add_argument("--quick", action="store_true", help="8 streams × 20 tokens, 2 + 2 rounds")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.streams, args.tokens, args.rounds, args.baseline_rounds = 8, 20, 2, 2
    print(f"{args.streams} streams × {args.tokens} tokens, {'seeded' if args.seeded else 'no seed'}"
          f", server on {args.threads} thread(s), {os.cpu_count()} CPUs",
          file=sys.stderr)  # fmt: skip
    on, off = measure(args)
    batched, alone = summarise("batching on", on), summarise("batching off", off)
    pairs = [a["tokens"] / a["seconds"] / (b["tokens"] / b["seconds"]) for a, b in zip(on, off)]
    rows = [batched, alone]
    ratio = batched["tokens_per_s"] / alone["tokens_per_s"]
    if args.json:
        print(json.dumps({"rows": rows, "batched_over_unbatched": ratio, "round_ratios": pairs}))
        return 0
    print("| server | tokens/s | TTFT p50 / p99 ms | per-token p50 / p99 ms | RSS MB per round "
          "| RSS spread | 5xx |")  # fmt: skip
    print("|---|---:|---:|---:|---|---:|---:|")
    for r in rows:
        rss = ", ".join(f"{m:.0f}" for m in r["rss_mb"])
        print(f"| {r['server']} | {r['tokens_per_s']:,.0f} | {r['ttft_p50_ms']:.1f} / "
              f"{r['ttft_p99_ms']:.1f} | {r['token_p50_ms']:.1f} / {r['token_p99_ms']:.1f} | "
              f"{rss} | {100 * r['rss_spread']:.1f}% | {r['5xx']} |")  # fmt: skip
    print(f"\nbatched / unbatched tokens/s: {ratio:.2f}× (medians; target ≥ 8×); round by round: "
          + ", ".join(f"{x:.2f}×" for x in pairs))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
