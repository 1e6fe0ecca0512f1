"""Turns one choice's tokens into protocol messages: incremental text, tool calls, stop strings,
finish."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from inference.engines.base import EngineFinish, SequenceOutput, TokenLogprob
from inference.text.stop import StopMatcher
from inference.text.tokenizer import ModelTokenizer
from inference.tool_call_parser import ToolCallParser
from tensorchat.v1 import inference_pb2 as pb

_FINISH_REASONS = {
    EngineFinish.EOS: pb.FINISH_REASON_STOP,
    EngineFinish.LENGTH: pb.FINISH_REASON_LENGTH,
    EngineFinish.STOP_TOKEN: pb.FINISH_REASON_STOP_TOKEN,
    EngineFinish.CANCELLED: pb.FINISH_REASON_CANCELLED,
    EngineFinish.TIME_LIMIT: pb.FINISH_REASON_TIME_LIMIT,
}
# The model ended the choice itself (its grammar allowed no more): after calls, that is the
# end of a tool-calling turn.
_CALLS_END = frozenset({pb.FINISH_REASON_STOP, pb.FINISH_REASON_STOP_TOKEN})


@dataclass(frozen=True, slots=True)
class Echo:
    """GenerateRequest.echo: what each choice's first Delta returns of the prompt."""

    text: str
    first_token_id: int  # listed without a logprob: nothing comes before it
    only: bool = False  # max_tokens 0: the prompt alone, nothing generated


class ChoiceAssembler:
    """Accumulates a choice's outputs and emits at most one Delta and one Finished per `feed`.

    Feeding several engine outputs at once (the reader lagged) yields one merged Delta, which is
    how the stream coalesces tokens only when it has to.
    """

    def __init__(
        self,
        index: int,
        tokenizer: ModelTokenizer,
        *,
        prompt_tokens: int,
        stops: Sequence[str],
        output: pb.OutputMode.ValueType,
        logprobs: bool,
        tool_calls: ToolCallParser | None = None,
        echo: Echo | None = None,
        continues: Sequence[int] = (),
    ) -> None:
        """`tool_calls`: reads calls out of the text, for a choice that may call tools.
        `continues`: for a raw prompt, its last ids, which the text continues."""
        self.index = index
        self.finished = False
        self.completion_tokens = 0
        self._tokenizer = tokenizer
        self._prompt_tokens = prompt_tokens
        self._want_tokens = output != pb.OUTPUT_MODE_TEXT
        self._want_text = output != pb.OUTPUT_MODE_TOKENS or bool(stops) or tool_calls is not None
        self._send_text = output != pb.OUTPUT_MODE_TOKENS
        self._want_logprobs = logprobs
        self._detokenizer = tokenizer.new_detokenizer(continues) if self._want_text else None
        self._stops = StopMatcher(stops) if stops else None
        self._tool_calls = tool_calls
        self._echo = echo
        self._echoed = False

    def feed(self, outputs: Sequence[SequenceOutput]) -> tuple[pb.Delta | None, pb.Finished | None]:
        """Returns the new Delta (None if nothing to send) and the Finished message, if done.

        Returns (None, None) once finished: outputs after a stop string matched are dropped.
        """
        if self.finished:
            return None, None
        if self._echo is not None and self._echo.only:
            return self._echo_alone(outputs)
        token_ids: list[int] = []
        logprobs: list[TokenLogprob] = []
        finish: SequenceOutput | None = None
        cached_tokens = 0
        for output in outputs:
            token_ids.extend(output.token_ids)
            if output.logprobs:
                logprobs.extend(output.logprobs)
            if output.finish is not None:
                finish = output
                cached_tokens = output.cached_tokens
                break
        self.completion_tokens += len(token_ids)

        text = ""
        calls: list[pb.ToolCallDelta] = []
        matched_stop: str | None = None
        if self._detokenizer is not None:
            if self._tool_calls is not None:
                text, calls = self._read_calls(token_ids, finish is not None)
            else:
                text = self._detokenizer.push(token_ids)
                if finish is not None:
                    text += self._detokenizer.flush()
            if self._stops is not None:
                text, matched_stop = self._stops.push(text)
                if finish is not None and matched_stop is None:
                    text += self._stops.flush()

        delta = self._delta(text, token_ids, logprobs, calls, self._prompt(outputs))
        if matched_stop is not None:
            self.finished = True
            return delta, self._finished(
                pb.FINISH_REASON_STOP_SEQUENCE, cached_tokens, stop=matched_stop
            )
        if finish is not None:
            self.finished = True
            assert finish.finish is not None
            reason = _FINISH_REASONS[finish.finish]
            if self._tool_calls is not None and self._tool_calls.calls and reason in _CALLS_END:
                reason = pb.FINISH_REASON_TOOL_CALLS
            return delta, self._finished(reason, cached_tokens, stop_token_id=finish.stop_token_id)
        return delta, None

    def _read_calls(
        self, token_ids: list[int], finishing: bool
    ) -> tuple[str, list[pb.ToolCallDelta]]:
        """Text and call deltas of new tokens. A trigger token (Mistral's [TOOL_CALLS])
        decodes to nothing, so the parser is told where it came."""
        assert self._detokenizer is not None and self._tool_calls is not None
        parser, trigger = self._tool_calls, self._tool_calls.trigger_token
        text: list[str] = []
        calls: list[pb.ToolCallDelta] = []

        def take(result: tuple[str, list[pb.ToolCallDelta]]) -> None:
            text.append(result[0])
            calls.extend(result[1])

        start = 0
        for i, token in enumerate(token_ids):
            if token == trigger:
                take(parser.push(self._detokenizer.push(token_ids[start:i])))
                take(parser.push_trigger_token())
                start = i + 1
        take(parser.push(self._detokenizer.push(token_ids[start:])))
        if finishing:
            take(parser.push(self._detokenizer.flush()))
            take(parser.finish())
        return "".join(text), calls

    def _echo_alone(
        self, outputs: Sequence[SequenceOutput]
    ) -> tuple[pb.Delta | None, pb.Finished | None]:
        """max_tokens 0 with echo: the prompt, then LENGTH; what the engine generated is not
        the client's (engines generate at least one token) and ending here cancels it."""
        self.finished = True
        cached = next((o.cached_tokens for o in outputs if o.finish is not None), 0)
        return self._delta("", [], [], [], self._prompt(outputs)), self._finished(
            pb.FINISH_REASON_LENGTH, cached
        )

    def _prompt(self, outputs: Sequence[SequenceOutput]) -> pb.PromptEcho | None:
        """The PromptEcho for the choice's first Delta; None after it or without echo."""
        if self._echo is None or self._echoed:
            return None
        self._echoed = True
        echo = pb.PromptEcho(text=self._echo.text)
        scored = next((o.prompt_logprobs for o in outputs if o.prompt_logprobs is not None), None)
        if self._want_logprobs and scored is not None:
            # The first token has no logprob (nothing precedes it): 0 and no alternatives.
            first = self._tokenizer
            echo.logprobs.add(
                token_id=self._echo.first_token_id,
                token=first.token_text(self._echo.first_token_id),
                bytes=first.token_bytes(self._echo.first_token_id),
            )
            echo.logprobs.extend(self._logprob(item) for item in scored)
        return echo

    def _delta(
        self,
        text: str,
        token_ids: list[int],
        logprobs: list[TokenLogprob],
        calls: list[pb.ToolCallDelta],
        prompt: pb.PromptEcho | None = None,
    ) -> pb.Delta | None:
        if not (text or token_ids or calls or prompt):
            return None
        delta = pb.Delta(tool_calls=calls)
        if prompt is not None:
            delta.prompt.CopyFrom(prompt)
        if self._send_text:
            delta.text = text
        if self._want_tokens:
            delta.token_ids.extend(token_ids)
        if self._want_logprobs:
            delta.logprobs.extend(self._logprob(item) for item in logprobs)
        return delta

    def _logprob(self, item: TokenLogprob) -> pb.TokenLogprob:
        tokenizer = self._tokenizer
        return pb.TokenLogprob(
            token_id=item.token_id,
            token=tokenizer.token_text(item.token_id),
            logprob=item.logprob,
            bytes=tokenizer.token_bytes(item.token_id),
            top_logprobs=[
                pb.TopLogprob(
                    token_id=token_id,
                    token=tokenizer.token_text(token_id),
                    logprob=logprob,
                    bytes=tokenizer.token_bytes(token_id),
                )
                for token_id, logprob in item.top
            ],
        )

    def _finished(
        self,
        reason: pb.FinishReason.ValueType,
        cached_tokens: int,
        *,
        stop: str | None = None,
        stop_token_id: int | None = None,
    ) -> pb.Finished:
        finished = pb.Finished(
            reason=reason,
            usage=pb.Usage(
                prompt_tokens=self._prompt_tokens,
                completion_tokens=self.completion_tokens,
                cached_tokens=cached_tokens,
            ),
        )
        if stop is not None:
            finished.matched_stop = stop
        elif stop_token_id is not None and reason == pb.FINISH_REASON_STOP_TOKEN:
            finished.matched_stop_token_id = stop_token_id
        return finished
