"""Greedy parity of an engine with the torch reference: the one rule of `engines verify` and
of the GPU check (tests/gpu/check).

The reference is asked along the candidate's own path (teacher forcing): at every position it
sees the prompt plus the candidate's tokens so far, so one early difference does not hide the
rest. A position passes when both chose the same token with logprobs within the tolerance, or
when they chose different tokens that the reference itself ranks within the tolerance of each
other (a near-tie: BF16 and FP32 arithmetic, or two BF16 kernels, may order them either way;
the tiny random test models, whose next-token distributions are nearly flat, have such ties
every few dozen tokens). Anything else is a real divergence and fails.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

# Against an FP32 reference (the GPU check); verify's BF16 reference gets its own per precision.
LOGPROB_TOLERANCE = 1e-2


@dataclass(frozen=True)
class Step:
    """One generated position: the chosen token, its logprob and (reference only) the top list."""

    token: int
    logprob: float
    top: Mapping[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Parity:
    ok: bool
    detail: str
    compared: int = 0
    ties: int = 0
    max_logprob_error: float = 0.0


def compare_greedy(
    candidate: Sequence[Step],
    reference: Sequence[Step],
    tolerance: float = LOGPROB_TOLERANCE,
    names: tuple[str, str] = ("candidate", "reference"),
) -> Parity:
    """Compare position by position; `reference[i]` was computed on the candidate's prefix."""
    cand_name, ref_name = names
    if not candidate:
        return Parity(False, f"{cand_name} generated no tokens")
    if len(reference) != len(candidate):
        return Parity(
            False, f"{ref_name} answered {len(reference)} positions for {len(candidate)} tokens"
        )
    ties = 0
    worst = 0.0
    for i, (got, want) in enumerate(zip(candidate, reference, strict=True)):
        if got.token == want.token:
            error = abs(got.logprob - want.logprob)
            if error > tolerance:
                return Parity(
                    False,
                    f"token {i}: logprob of {got.token} is {got.logprob:.4f} in {cand_name}, "
                    f"{want.logprob:.4f} in {ref_name} (tolerance {tolerance:g})",
                    i,
                    ties,
                    max(worst, error),
                )
            worst = max(worst, error)
            continue
        ranked = want.top.get(got.token)
        if ranked is None:
            return Parity(
                False,
                f"token {i}: {cand_name} chose {got.token} ({got.logprob:.4f}), {ref_name} "
                f"chose {want.token} ({want.logprob:.4f}) and has no {got.token} in its top "
                f"{len(want.top)}",
                i,
                ties,
                worst,
            )
        error = abs(got.logprob - ranked)
        if want.logprob - ranked > tolerance or error > tolerance:
            return Parity(
                False,
                f"token {i}: {cand_name} chose {got.token} ({got.logprob:.4f}), {ref_name} "
                f"chose {want.token} ({want.logprob:.4f}) and gives {got.token} {ranked:.4f}: "
                f"not a tie within {tolerance:g}",
                i,
                ties,
                max(worst, error),
            )
        ties += 1
        worst = max(worst, error)
    return Parity(
        True,
        f"{len(candidate)} tokens, max |logprob difference| {worst:.4f}, {ties} near-tie(s)",
        len(candidate),
        ties,
        worst,
    )


# (prompt token ids, max new tokens) -> the greedy steps the reference generates.
Generate = Callable[[list[int], int], Awaitable[list[Step]]]


async def reference_along(
    prompt: Sequence[int],
    candidate_tokens: Sequence[int],
    generate: Generate,
    accept: Callable[[Sequence[Step]], bool] = lambda _steps: True,
) -> list[Step]:
    """The reference's step at every position of the candidate's path.

    The reference generates greedily from the candidate's prefix; where it chooses another
    token, it is asked again from the candidate's next prefix. Equal paths cost one request.
    Before asking again it hands the steps so far to `accept`; when that refuses them (a
    position already failed) they are returned as they are: walking further is wasted work.
    """
    steps: list[Step] = []
    while len(steps) < len(candidate_tokens):
        done = len(steps)
        if done and not accept(steps):
            break
        answer = await generate([*prompt, *candidate_tokens[:done]], len(candidate_tokens) - done)
        if not answer:
            raise RuntimeError(f"the reference generated nothing after {done} tokens")
        for step in answer[: len(candidate_tokens) - done]:
            steps.append(step)
            if step.token != candidate_tokens[len(steps) - 1]:
                break
    return steps


async def compare_prompts(
    prompts: Sequence[Sequence[int]],
    candidates: Sequence[Sequence[Step]],
    reference: Generate,
    tolerance: float = LOGPROB_TOLERANCE,
    names: tuple[str, str] = ("candidate", "reference"),
) -> Parity:
    """Every prompt's candidate steps against the reference walked along them; one result.

    The candidates are generated first (verify frees the GPU of the engine before the torch
    reference loads), so the reference is only asked here. The first failure ends the walk.
    """
    results = []
    for prompt, candidate in zip(prompts, candidates, strict=True):
        results.append(await _compare_along(prompt, candidate, reference, tolerance, names))
        if not results[-1].ok:
            break
    return summarize(results)


async def _compare_along(
    prompt: Sequence[int],
    candidate: Sequence[Step],
    reference: Generate,
    tolerance: float,
    names: tuple[str, str],
) -> Parity:
    def agrees(along: Sequence[Step]) -> bool:
        return compare_greedy(candidate[: len(along)], along, tolerance, names).ok

    along = await reference_along(prompt, [s.token for s in candidate], reference, agrees)
    # `along` is shorter than the candidate only when a position failed: compare what it has.
    return compare_greedy(candidate[: len(along)], along, tolerance, names)


def summarize(per_prompt: Sequence[Parity]) -> Parity:
    """One result for several prompts: the first failure (naming its prompt), else the totals."""
    for i, result in enumerate(per_prompt):
        if not result.ok:
            return Parity(False, f"prompt {i}: {result.detail}")
    if not per_prompt:
        return Parity(False, "no prompts compared")
    compared = sum(r.compared for r in per_prompt)
    ties = sum(r.ties for r in per_prompt)
    worst = max(r.max_logprob_error for r in per_prompt)
    return Parity(
        True,
        f"{len(per_prompt)} prompts, {compared} greedy tokens equal, max |logprob difference| "
        f"{worst:.4f}, {ties} near-tie(s)",
        compared,
        ties,
        worst,
    )
