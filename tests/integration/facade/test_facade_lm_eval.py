"""A real lm-evaluation-harness `local-completions` loglikelihood run against the facade (issue
17 item 1): the torch engine on the tiny random Mistral, on loopback.

lm-eval is not a dependency (it pulls in torch-adjacent extras and datasets); the test runs the
`lm_eval` found in $TENSORCHAT_LM_EVAL or on PATH, and is skipped without one. Its task is a
local one (a JSON file, no download): two answers per question, each scored as lm-eval scores
them, token ids with `echo`, `logprobs` 1 and `max_tokens` 1, the prompt's logprobs summed.
The scores it logs must be what the facade's own scoring request gives (echo, logprobs,
max_tokens 0), so the run checks the numbers as well as the shapes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import openai
import pytest
from transformers import AutoTokenizer

from tests.integration.conftest import MISTRAL_ID
from tests.integration.facade.conftest import TORCH_ONLY, FacadeServerThread, Keys

LM_EVAL = os.environ.get("TENSORCHAT_LM_EVAL") or shutil.which("lm_eval")

pytestmark = [
    TORCH_ONLY,
    pytest.mark.slow,
    pytest.mark.skipif(LM_EVAL is None, reason="lm_eval not installed (TENSORCHAT_LM_EVAL)"),
]

QUESTIONS = [
    {"question": "The capital of France is", "choices": ["Paris", "a fish"], "answer": 0},
    {"question": "Two plus two equals", "choices": ["four", "blue"], "answer": 0},
    {"question": "The sky is", "choices": ["green", "blue"], "answer": 1},
]
# lm-eval asks for each choice after the question and its target delimiter, " ".
DELIMITER = " "
TASK = """\
task: tensorchat_tiny_loglikelihood
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
"""


def test_lm_eval_local_completions_loglikelihood_matches_the_facades_scores(
    facade: FacadeServerThread,
    facade_keys: Keys,
    client: openai.OpenAI,
    tiny_mistral_dir: Path,
    tmp_path: Path,
) -> None:
    assert LM_EVAL is not None
    data = tmp_path / "questions.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny.yaml").write_text(TASK.format(data=data))
    model_args = ",".join(
        [
            f"model={MISTRAL_ID}",
            f"base_url={facade.url}/v1/completions",
            "tokenizer_backend=huggingface",
            f"tokenizer={tiny_mistral_dir}",
            # Mistral's prompts begin with BOS (lm-eval leaves it out unless told).
            "add_bos_token=True",
            "max_retries=1",
        ]
    )
    command = [
        LM_EVAL,
        "--model", "local-completions",
        "--model_args", model_args,
        "--tasks", "tensorchat_tiny_loglikelihood",
        "--include_path", str(tasks),
        "--batch_size", "2",  # several prompts in one request
        "--output_path", str(tmp_path / "out"),
        "--log_samples",
    ]  # fmt: skip
    env = {
        **os.environ,
        "OPENAI_API_KEY": facade_keys.full,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
    }
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    [results_file] = (tmp_path / "out").rglob("results_*.json")
    results = json.loads(results_file.read_text())["results"]["tensorchat_tiny_loglikelihood"]
    assert 0.0 <= results["acc,none"] <= 1.0
    [samples_file] = (tmp_path / "out").rglob("samples_tensorchat_tiny_loglikelihood_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(samples) == len(QUESTIONS)
    tokenizer = AutoTokenizer.from_pretrained(tiny_mistral_dir)
    for sample in samples:
        doc = sample["doc"]
        scores = [float(resp[0][0]) for resp in sample["resps"]]
        assert scores == pytest.approx(
            [_score(client, tokenizer, doc["question"], DELIMITER + c) for c in doc["choices"]],
            abs=1e-3,
        )


def _score(client: openai.OpenAI, tokenizer: Any, context: str, continuation: str) -> float:
    """The continuation's log probability after the context, by the facade's scoring request."""
    context_ids = tokenizer(context)["input_ids"]
    whole_ids = tokenizer(context + continuation)["input_ids"]
    completion = client.completions.create(
        model=MISTRAL_ID, prompt=whole_ids, echo=True, logprobs=1, max_tokens=0, temperature=0
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.token_logprobs is not None
    scored = logprobs.token_logprobs[len(context_ids) :]
    assert all(lp is not None and math.isfinite(lp) for lp in scored)
    return sum(lp for lp in scored if lp is not None)
