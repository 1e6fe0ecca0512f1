"""The service under check: candidate and reference models, the gRPC greedy client, the facade.

Each tiny model is served twice by one inference service: as `tiny/<name>` by the candidate
engine (trtllm) and as `tiny/<name>-torch` by the torch engine in FP32 on the CPU, the reference:
the checkpoints hold BF16 weights, so FP32 computes the model exactly as written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
import openai

from enginebuild.parity import Parity, Step, compare_prompts
from inference.config import EngineName, ModelConfig, ModelsConfig
from tensorchat.v1 import inference_pb2 as pb
from tensorchat.v1 import inference_pb2_grpc as pb_grpc
from tests.gpu.check.builds import TINY_LIMITS, TinyModel

# Token-id prompts of 4, 8 and 40 tokens (every id is valid in both vocabularies).
PROMPTS: tuple[tuple[int, ...], ...] = (
    (1, 100, 200, 300),
    (5, 6, 7, 8, 9, 10, 11, 12),
    tuple(range(20, 60)),
)
GREEDY_TOKENS = 12
# Alternatives the reference reports per position, to recognise near-ties.
TOP_LOGPROBS = 5
STREAM_TOKENS = 8
API_KEY = "gpu-check"


def reference_id(model: TinyModel) -> str:
    return f"{model.id}-torch"


def models_config(
    models: Sequence[TinyModel],
    candidate_engine: EngineName,
    candidate_options: Mapping[str, Mapping[str, object]],
) -> ModelsConfig:
    """Every model as candidate (options by model id) and as the FP32 torch reference."""
    configs: list[ModelConfig] = []
    for model in models:
        for model_id, engine, options in (
            (model.id, candidate_engine, dict(candidate_options.get(model.id, {}))),
            (reference_id(model), "torch", {"dtype": "float32", "device": "cpu"}),
        ):
            configs.append(
                ModelConfig(
                    id=model_id,
                    engine=engine,
                    checkpoint=model.checkpoint,
                    context_length=TINY_LIMITS.max_seq_len,
                    options=options,
                )
            )
    return ModelsConfig(models=configs)


@dataclass(frozen=True)
class Client:
    """gRPC calls to the service, each bounded by `timeout_s`."""

    stub: pb_grpc.InferenceAsyncStub
    timeout_s: float

    async def greedy(
        self, model_id: str, prompt: Sequence[int], max_tokens: int, top_logprobs: int = 0
    ) -> list[Step]:
        """Greedy tokens past EOS, with each token's logprob (and the top list if asked)."""
        request = pb.GenerateRequest(
            model=model_id,
            token_ids=pb.TokenIds(ids=list(prompt)),
            sampling=pb.SamplingParams(temperature=0.0),
            stopping=pb.StoppingCriteria(max_tokens=max_tokens, ignore_eos=True),
            logprobs=True,
            top_logprobs=top_logprobs,
            output=pb.OUTPUT_MODE_TOKENS,
        )
        steps: list[Step] = []
        async for response in self.stub.Generate(request, timeout=self.timeout_s):
            if response.WhichOneof("kind") != "delta":
                continue
            for entry in response.delta.logprobs:
                top = {alt.token_id: alt.logprob for alt in entry.top_logprobs}
                steps.append(Step(entry.token_id, entry.logprob, top))
        return steps

    async def parity(self, model: TinyModel, candidate_name: str) -> Parity:
        """The candidate's greedy tokens and logprobs against the reference, on every prompt."""
        candidates = [await self.greedy(model.id, prompt, GREEDY_TOKENS) for prompt in PROMPTS]

        async def reference(prefix: list[int], count: int) -> list[Step]:
            return await self.greedy(reference_id(model), prefix, count, TOP_LOGPROBS)

        return await compare_prompts(
            PROMPTS, candidates, reference, names=(candidate_name, "torch")
        )


def connect(address: str, timeout_s: float) -> tuple[grpc.aio.Channel, Client]:
    channel = grpc.aio.insecure_channel(address)
    return channel, Client(pb_grpc.InferenceStub(channel), timeout_s)


async def stream_through_facade(url: str, model_id: str, timeout_s: float) -> tuple[bool, str]:
    """One streamed chat completion through the facade's OpenAI API; (ok, what happened)."""
    client = openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key=API_KEY, max_retries=0, timeout=timeout_s
    )
    chunks, finish, completion_tokens = 0, None, None
    async with client:
        stream = await client.chat.completions.create(
            model=model_id,
            messages=[{"role": "user", "content": "Count from one to five."}],
            max_tokens=STREAM_TOKENS,
            temperature=0.0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        async for chunk in stream:
            if chunk.usage is not None:
                completion_tokens = chunk.usage.completion_tokens
            for choice in chunk.choices:
                chunks += bool(choice.delta.content)
                finish = choice.finish_reason or finish
    ok = chunks > 0 and finish == "length" and completion_tokens == STREAM_TOKENS
    return ok, (
        f"{model_id}: {chunks} content chunk(s), finish_reason {finish}, "
        f"{completion_tokens} completion tokens (want {STREAM_TOKENS}, finish_reason length)"
    )
