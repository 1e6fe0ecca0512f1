"""Per-row logits processing and token choice for a batch whose rows each have their own parameters.

Order of processing (vLLM's): logit bias and min_tokens masking, then penalties, then the
grammar's token mask (constrained rows only), then greedy argmax or temperature -> min_p ->
top_k / top_p -> a draw from the row's own generator. Masking before truncation keeps top_k and
top_p among the tokens the grammar allows.

Logprobs are those of the model's raw distribution (log-softmax of the logits before bias,
penalties, temperature or truncation). That is vLLM's default (`logprobs_mode="raw_logprobs"`)
and matches OpenAI, whose logprobs do not move with temperature; `processed_logprobs=True`
switches to the log-softmax of the distribution the token was actually drawn from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from inference.engines.base import TokenLogprob
from inference.grammar import CompiledConstraint, SequenceMatcher, apply_bitmask
from inference.sampling import SamplingParams

_U64 = (1 << 64) - 1


@dataclass(slots=True)
class RowSampler:
    """Sampling state of one sequence: its parameters, random stream and token counts."""

    params: SamplingParams
    # Own random stream, so a seeded row draws the same numbers whatever shares its batch.
    generator: torch.Generator | None
    # Token ids masked while fewer than min_tokens were generated (stop ids, EOS unless ignored).
    min_tokens_block: torch.Tensor | None
    bias_ids: torch.Tensor | None
    bias_values: torch.Tensor | None
    # Generated-token counts over the vocabulary (frequency/presence/repetition penalties).
    output_counts: torch.Tensor | None
    # Tokens of the prompt (repetition penalty applies to the prompt too, as in HF and vLLM).
    prompt_mask: torch.Tensor | None
    # The request's grammar and this row's place in it (None: unconstrained).
    constraint: CompiledConstraint | None = None
    matcher: SequenceMatcher | None = None
    generated: int = 0

    @property
    def greedy(self) -> bool:
        return self.params.greedy

    @property
    def penalised(self) -> bool:
        return self.output_counts is not None


@dataclass(slots=True)
class SampledToken:
    token_id: int
    logprob: TokenLogprob | None = None


@dataclass(slots=True)
class Sampler:
    """Chooses the next token of every row of a batch in one call."""

    vocab_size: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    processed_logprobs: bool = False

    def new_row(
        self,
        params: SamplingParams,
        *,
        index: int,
        prompt_mask: torch.Tensor | None,
        eos_token_ids: frozenset[int],
        constraint: CompiledConstraint | None = None,
    ) -> RowSampler:
        """State for choice `index` of a request; `prompt_mask` comes from `prompt_mask()`."""
        generator: torch.Generator | None = None
        if not params.greedy:
            generator = torch.Generator(device=self.device)
            seed = params.seed_for(index)
            if seed is None:
                generator.seed()  # fresh, non-deterministic
            else:
                generator.manual_seed(seed & _U64)
        block = set(params.stop_token_ids)
        if not params.ignore_eos:
            block |= eos_token_ids
        bias_ids = bias_values = None
        if params.logit_bias:
            bias_ids = torch.tensor(list(params.logit_bias), dtype=torch.long, device=self.device)
            bias_values = torch.tensor(
                list(params.logit_bias.values()), dtype=torch.float32, device=self.device
            )
        penalised = (
            params.repetition_penalty != 1.0
            or params.presence_penalty != 0.0
            or params.frequency_penalty != 0.0
        )
        return RowSampler(
            params=params,
            generator=generator,
            min_tokens_block=(
                torch.tensor(sorted(block), dtype=torch.long, device=self.device)
                if params.min_tokens > 0 and block
                else None
            ),
            bias_ids=bias_ids,
            bias_values=bias_values,
            output_counts=(
                torch.zeros(self.vocab_size, dtype=torch.float32, device=self.device)
                if penalised
                else None
            ),
            prompt_mask=prompt_mask if params.repetition_penalty != 1.0 else None,
            constraint=constraint,
            matcher=constraint.new_matcher() if constraint is not None else None,
        )

    def prompt_mask(self, prompt_token_ids: Sequence[int]) -> torch.Tensor:
        """Vocabulary mask of the prompt's tokens, shared by the n rows of one request."""
        mask = torch.zeros(self.vocab_size, dtype=torch.bool, device=self.device)
        mask[torch.tensor(list(prompt_token_ids), dtype=torch.long, device=self.device)] = True
        return mask

    def sample(self, logits: torch.Tensor, rows: Sequence[RowSampler]) -> list[SampledToken]:
        """Pick one token per row of `logits` [B, V] and advance each row's state."""
        if logits.shape[0] != len(rows):
            raise ValueError(f"{logits.shape[0]} logit rows for {len(rows)} samplers")
        # The model may pad its vocabulary past the tokenizer's; only real ids are sampled.
        x = logits[:, : self.vocab_size].to(torch.float32, copy=True)
        want_lp = [i for i, r in enumerate(rows) if r.params.logprobs]
        raw_lp = None
        if want_lp and not self.processed_logprobs:
            raw_lp = torch.log_softmax(x[want_lp], dim=-1)

        self._apply_logit_bias(x, rows)
        self._apply_min_tokens(x, rows)
        self._apply_penalties(x, rows)
        self._apply_grammar(x, rows)

        tokens = torch.empty(len(rows), dtype=torch.long, device=x.device)
        greedy = [i for i, r in enumerate(rows) if r.greedy]
        if greedy:
            tokens[greedy] = x[greedy].argmax(dim=-1)
        rand = [i for i, r in enumerate(rows) if not r.greedy]
        if rand:
            y = self._truncate(x[rand], [rows[i].params for i in rand])
            if self.processed_logprobs:
                x[rand] = y
            probs = torch.softmax(y, dim=-1)
            for j, i in enumerate(rand):
                tokens[i] = torch.multinomial(probs[j], 1, generator=rows[i].generator)[0]

        chosen = tokens.tolist()
        out = [SampledToken(t) for t in chosen]
        if want_lp:
            lp = raw_lp if raw_lp is not None else torch.log_softmax(x[want_lp], dim=-1)
            self._fill_logprobs(out, lp, want_lp, rows)
        for row, token in zip(rows, chosen, strict=True):
            row.generated += 1
            if row.output_counts is not None:
                row.output_counts[token] += 1
            if row.matcher is not None and not row.matcher.accept(token):
                # The mask allowed only grammar tokens: this is a bug, never a bad request.
                raise RuntimeError(f"sampled token {token} that the grammar forbids")
        return out

    def _apply_grammar(self, x: torch.Tensor, rows: Sequence[RowSampler]) -> None:
        """-inf for every token the row's grammar forbids next; only constrained rows pay."""
        constrained = [i for i, r in enumerate(rows) if r.matcher is not None]
        if not constrained:
            return
        first = rows[constrained[0]].constraint
        assert first is not None
        bitmask = first.allocate_bitmask(len(rows))
        for i in constrained:
            matcher = rows[i].matcher
            assert matcher is not None
            matcher.fill_bitmask(bitmask, i)
        apply_bitmask(x, bitmask, constrained)

    def _apply_logit_bias(self, x: torch.Tensor, rows: Sequence[RowSampler]) -> None:
        biased = [(i, r) for i, r in enumerate(rows) if r.bias_ids is not None]
        if not biased:
            return
        row_idx = torch.cat([torch.full_like(r.bias_ids, i) for i, r in biased])  # type: ignore[arg-type]
        tok_idx = torch.cat([r.bias_ids for _, r in biased])  # type: ignore[misc]
        vals = torch.cat([r.bias_values for _, r in biased])  # type: ignore[misc]
        x.index_put_((row_idx, tok_idx), vals, accumulate=True)

    def _apply_min_tokens(self, x: torch.Tensor, rows: Sequence[RowSampler]) -> None:
        for i, r in enumerate(rows):
            if r.min_tokens_block is not None and r.generated < r.params.min_tokens:
                x[i, r.min_tokens_block] = float("-inf")

    def _apply_penalties(self, x: torch.Tensor, rows: Sequence[RowSampler]) -> None:
        idx = [i for i, r in enumerate(rows) if r.penalised]
        if not idx:
            return
        counts = torch.stack([rows[i].output_counts for i in idx])  # type: ignore[misc]
        params = [rows[i].params for i in idx]
        y = x[idx]
        rep = torch.tensor([p.repetition_penalty for p in params], device=x.device)[:, None]
        if (rep != 1.0).any():
            seen = counts > 0
            for j, i in enumerate(idx):
                pm = rows[i].prompt_mask
                if pm is not None:
                    seen[j] |= pm
            # Shrink the logits of seen tokens toward zero from either side (CTRL paper, HF).
            penalised = torch.where(y > 0, y / rep, y * rep)
            y = torch.where(seen, penalised, y)
        freq = torch.tensor([p.frequency_penalty for p in params], device=x.device)[:, None]
        pres = torch.tensor([p.presence_penalty for p in params], device=x.device)[:, None]
        y = y - freq * counts - pres * (counts > 0).to(y.dtype)
        x[idx] = y

    def _truncate(self, y: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
        """Temperature, then min_p, top_k and top_p masks (-inf) on the rows that ask for them."""
        temp = torch.tensor([p.temperature for p in params], device=y.device)[:, None]
        y = y / temp
        min_p = torch.tensor([p.min_p for p in params], device=y.device)[:, None]
        if (min_p > 0).any():
            probs = torch.softmax(y, dim=-1)
            floor = probs.amax(dim=-1, keepdim=True) * min_p
            y = y.masked_fill(probs < floor, float("-inf"))
        top_k = torch.tensor(
            [p.top_k if 0 < p.top_k < y.shape[-1] else y.shape[-1] for p in params],
            device=y.device,
        )
        top_p = torch.tensor([p.top_p for p in params], device=y.device)
        if (top_k < y.shape[-1]).any() or (top_p < 1.0).any():
            y = _top_k_top_p(y, top_k, top_p)
        return y

    def _fill_logprobs(
        self,
        out: list[SampledToken],
        lp: torch.Tensor,
        want: list[int],
        rows: Sequence[RowSampler],
    ) -> None:
        chosen = torch.tensor([out[i].token_id for i in want], device=lp.device)
        chosen_lp = lp.gather(1, chosen[:, None])[:, 0].tolist()
        k_max = max(rows[i].params.top_logprobs for i in want)
        top_vals: list[list[float]] = []
        top_ids: list[list[int]] = []
        if k_max > 0:
            vals, ids = lp.topk(min(k_max, lp.shape[-1]), dim=-1)
            top_vals, top_ids = vals.tolist(), ids.tolist()
        for j, i in enumerate(want):
            k = rows[i].params.top_logprobs
            top = tuple(zip(top_ids[j][:k], top_vals[j][:k], strict=True)) if k > 0 else ()
            out[i].logprob = TokenLogprob(out[i].token_id, chosen_lp[j], top)


def _top_k_top_p(y: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask everything outside each row's top_k and smallest nucleus of mass top_p.

    One descending sort serves both filters; the most likely token always survives.
    """
    sorted_y, order = y.sort(dim=-1, descending=True)
    ranks = torch.arange(y.shape[-1], device=y.device)[None, :]
    drop = ranks >= top_k[:, None]
    sorted_y = sorted_y.masked_fill(drop, float("-inf"))
    probs = torch.softmax(sorted_y, dim=-1)
    # Mass strictly before each token: a token is kept while that mass is below top_p.
    before = probs.cumsum(dim=-1) - probs
    drop = (before >= top_p[:, None]) & (top_p[:, None] < 1.0)
    drop[:, 0] = False
    sorted_y = sorted_y.masked_fill(drop, float("-inf"))
    return torch.empty_like(y).scatter_(-1, order, sorted_y)
