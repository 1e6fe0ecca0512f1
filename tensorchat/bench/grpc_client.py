"""One Generate RPC straight to the inference service, timed per streamed message."""

from __future__ import annotations

import itertools
import os
import time

import grpc

from tensorchat.bench.stats import RequestResult
from tensorchat.bench.target import Target
from tensorchat.bench.workload import RequestSpec
from tensorchat.v1 import inference_pb2 as pb
from tensorchat.v1 import inference_pb2_grpc as pb_grpc

_FINISH_NAMES = {
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_STOP_SEQUENCE: "stop",
    pb.FINISH_REASON_STOP_TOKEN: "stop",
    pb.FINISH_REASON_CANCELLED: "cancelled",
    pb.FINISH_REASON_TIME_LIMIT: "time_limit",
}


class GrpcSender:
    """Sends `RequestSpec`s as streaming Generate calls over one channel (one HTTP/2 link)."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self._channel = grpc.aio.insecure_channel(
            target.address, options=[("grpc.max_receive_message_length", -1)]
        )
        self._stub = pb_grpc.InferenceStub(self._channel)
        self._metadata: tuple[tuple[str, str], ...] = ()
        if target.api_key:
            self._metadata = (("authorization", f"Bearer {target.api_key}"),)
        # Unique across worker processes: the pid separates workers, the counter requests.
        self._ids = (f"bench-{os.getpid()}-{i}" for i in itertools.count())

    async def aclose(self) -> None:
        await self._channel.close(grace=None)

    def request(self, spec: RequestSpec) -> pb.GenerateRequest:
        target = self._target
        sampling = pb.SamplingParams()
        if target.temperature is not None:
            sampling.temperature = target.temperature
        return pb.GenerateRequest(
            request_id=next(self._ids),
            model=target.model,
            messages=pb.ChatMessages(
                messages=[pb.ChatMessage(role=r, content=c) for r, c in spec.messages]
            ),
            sampling=sampling,
            stopping=pb.StoppingCriteria(max_tokens=spec.max_tokens, ignore_eos=target.ignore_eos),
            # Token ids make the token count per message exact.
            output=pb.OUTPUT_MODE_TEXT_AND_TOKENS,
        )

    async def send(self, spec: RequestSpec) -> RequestResult:
        request = self.request(spec)
        result = RequestResult(start=time.monotonic(), sizes_are_tokens=True)
        times, sizes = result.chunk_times, result.chunk_sizes
        counted = 0
        try:
            call = self._stub.Generate(
                request, timeout=self._target.timeout_s, metadata=self._metadata
            )
            async for message in call:
                now = time.monotonic()
                if message.HasField("delta"):
                    delta = message.delta
                    tokens = len(delta.token_ids)
                    if tokens or delta.text:
                        if result.ttft is None:
                            result.ttft = now - result.start
                        times.append(now)
                        sizes.append(tokens)
                        counted += tokens
                elif message.HasField("finished"):
                    finished = message.finished
                    result.finish_reason = _FINISH_NAMES.get(finished.reason, "unspecified")
                    result.output_tokens = finished.usage.completion_tokens or counted
                    result.prompt_tokens = finished.usage.prompt_tokens
            result.ok = True
            if result.finish_reason is None:
                result.ok, result.error = False, "incomplete"
        except grpc.aio.AioRpcError as exc:
            result.error = f"grpc_{exc.code().name}"
        result.end = time.monotonic()
        return result
