"""GenerateMany streams move on (facade/backend_streams.py): with two inference services
behind one target, the second started after the facade's streams opened, retired streams
make way for fresh ones that reach it, and no generation is lost on the way."""

from __future__ import annotations

import asyncio
from pathlib import Path

from facade.backend_streams import EOF, BackendStreams, StreamLimits
from facade.backends import BackendPool
from tensorchat.v1 import inference_pb2 as pb
from tests.integration.facade.conftest import SYNTHETIC, synthetic_models
from tests.support.facade_process import free_port
from tests.support.servers import InferenceServerThread

HELLO = pb.ChatMessages(messages=[pb.ChatMessage(role="user", content="hi")])


def generated_tokens(server: InferenceServerThread) -> int:
    return server.engines[SYNTHETIC].stats().generated_tokens


async def generate(streams: BackendStreams, request_id: str) -> None:
    """One generation read to its end; it must end OK (nothing lost on a retiring stream)."""
    request = pb.GenerateRequest(
        request_id=request_id,
        model=SYNTHETIC,
        messages=HELLO,
        stopping=pb.StoppingCriteria(max_tokens=2),
    )
    generation = await streams.start(request, timeout_s=30)
    while await generation.read() is not EOF:
        pass


async def test_retired_streams_reach_a_replica_started_later(tiny_qwen2_dir: Path) -> None:
    config = synthetic_models(tiny_qwen2_dir)
    first = InferenceServerThread(config).start()
    later_port = free_port()
    # One target, two addresses, as a headless Service's DNS name gives; round_robin.
    target = f"ipv4:{first.address},127.0.0.1:{later_port}"
    pool = BackendPool([target], stream_limits=StreamLimits(max_age_s=0, max_generations=2))
    later: InferenceServerThread | None = None
    try:
        await pool.start()
        streams = pool.backends[0].generations
        for i in range(4):
            await generate(streams, f"early-{i}")
        assert generated_tokens(first) > 0
        later = InferenceServerThread(config, port=later_port).start()
        # The channel reconnects to the later address on its own backoff; each retired stream
        # makes way for a new call that round_robin may place there. Bounded by count.
        for i in range(400):
            await generate(streams, f"late-{i}")
            if generated_tokens(later) > 0:
                break
            await asyncio.sleep(0.05)  # paces the loop while the channel reconnects
        assert generated_tokens(later) > 0, "no stream ever reached the replica started later"
        assert len(streams.streams) <= 2  # spent streams closed once drained
    finally:
        await pool.close()
        for server in (first, later):
            if server is not None:
                server.stop()


async def test_without_limits_every_generation_stays_on_the_first_stream(
    tiny_qwen2_dir: Path,
) -> None:
    # The control: what made the streams move on above is the limits, nothing else.
    server = InferenceServerThread(synthetic_models(tiny_qwen2_dir)).start()
    pool = BackendPool([server.address], stream_limits=StreamLimits(0, 0))
    try:
        await pool.start()
        streams = pool.backends[0].generations
        for i in range(5):
            await generate(streams, f"r{i}")
        (only,) = streams.streams
        assert only.started == 5 and only.accepting
    finally:
        await pool.close()
        server.stop()
