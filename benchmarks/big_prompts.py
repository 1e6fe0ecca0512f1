#!/usr/bin/env python3
"""Do big prompts stall the other streams of a replica? The worst inter-token gap of 16
running streams, first alone, then while huge prompts arrive.

One `tensorchat inference` process serves the synthetic engine (no compute: each stream
emits `--rate` tokens/s, so its normal gap is 1/rate). 16 Generate streams run throughout;
the gap is measured per message on each, over three phases of `--phase` seconds:

  baseline   the streams alone
  oversize   `--big-mib` MiB prompts arriving back to back (over the length bound: refused
             before templating, inference/prepare.py MAX_PROMPT_CHARS_PER_TOKEN)
  tokenized  prompts just under that bound arriving back to back (templated and tokenized,
             on the preparation threads, inference/runner.py)

and "added" is a phase's worst gap minus the baseline's. Goal: under 100 ms added.

Run from the repository root:  .venv/bin/python benchmarks/big_prompts.py
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

from benchmarks.stackbench.plan import MODEL
from benchmarks.stackbench.replicas import replicas
from inference.prepare import MAX_PROMPT_CHARS_PER_TOKEN
from tensorchat.v1 import inference_pb2 as pb
from tensorchat.v1 import inference_pb2_grpc as pb_grpc


async def stream_gaps(
    address: str, streams: int, marks: list[float], gaps: list[tuple[float, float]]
) -> None:
    """Runs `streams` long streams until the last mark; records (arrival time, gap)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.InferenceStub(channel)

        async def one(i: int) -> None:
            while time.monotonic() < marks[-1]:
                request = pb.GenerateRequest(
                    model=MODEL,
                    prompt=f"stream {i}",
                    stopping=pb.StoppingCriteria(ignore_eos=True),  # up to the context
                )
                call = stub.Generate(request)
                last = None
                async for _ in call:
                    now = time.monotonic()
                    if last is not None:
                        gaps.append((now, now - last))
                    last = now
                    if now >= marks[-1]:
                        call.cancel()
                        break

        await asyncio.gather(*(one(i) for i in range(streams)))


def send_prompts(address: str, chars: int, until: float, sent: list[str]) -> None:
    """Sends prompts of `chars` characters back to back until `until`; records how each ended."""
    with grpc.insecure_channel(
        address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    ) as channel:
        stub = pb_grpc.InferenceStub(channel)
        text = "word " * (chars // 5)
        while time.monotonic() < until:
            request = pb.GenerateRequest(
                model=MODEL,
                messages=pb.ChatMessages(messages=[pb.ChatMessage(role="user", content=text)]),
                stopping=pb.StoppingCriteria(max_tokens=1),
            )
            try:
                for _ in stub.Generate(request, timeout=120):
                    pass
                sent.append("OK")
            except grpc.RpcError as error:
                sent.append(error.code().name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--rate", type=float, default=50.0, help="tokens/s per stream")
    parser.add_argument("--big-mib", type=float, default=4.0)
    parser.add_argument("--phase", type=float, default=8.0, help="seconds per phase")
    args = parser.parse_args(argv)

    with replicas(Path(tempfile.mkdtemp(prefix="big-prompts-")), 1, rate=args.rate) as [replica]:
        with grpc.insecure_channel(replica.address) as channel:
            info = pb_grpc.InferenceStub(channel).GetModel(pb.GetModelRequest(model=MODEL))
        bound = info.context_length * MAX_PROMPT_CHARS_PER_TOKEN  # max_input_tokens <= context
        start = time.monotonic() + 2.0  # the streams settle first
        marks = [start + k * args.phase for k in range(4)]
        phases = {
            "oversize": int(args.big_mib * 1024 * 1024),
            "tokenized": int(bound * 0.9),
        }
        outcomes: dict[str, list[str]] = {name: [] for name in phases}
        senders = []
        for k, (name, chars) in enumerate(phases.items(), start=1):

            def later(k: int = k, name: str = name, chars: int = chars) -> None:
                time.sleep(max(0.0, marks[k] - time.monotonic()))
                send_prompts(replica.address, chars, marks[k + 1] - 0.5, outcomes[name])

            senders.append(threading.Thread(target=later, daemon=True))
        for sender in senders:
            sender.start()
        gaps: list[tuple[float, float]] = []
        asyncio.run(stream_gaps(replica.address, args.streams, marks, gaps))
        for sender in senders:
            sender.join(120)

    def worst(lo: float, hi: float) -> float:
        return max((gap for at, gap in gaps if lo <= at < hi), default=float("nan")) * 1000

    base = worst(marks[0], marks[1])
    print(f"{args.streams} streams at {args.rate:g} tokens/s; length bound {bound} characters")
    print(f"  baseline   worst gap {base:7.1f} ms")
    for k, name in enumerate(phases, start=1):
        most = worst(marks[k], marks[k + 1])
        ends = {code: outcomes[name].count(code) for code in sorted(set(outcomes[name]))}
        size = phases[name] / 1024 / 1024
        print(
            f"  {name:10} worst gap {most:7.1f} ms (+{most - base:.1f} ms)  "
            f"{len(outcomes[name])} prompts of {size:.2f} MiB: {ends}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
