"""The served OpenAPI document: valid, complete, and true to what the facade answers.

The first test validates /openapi.json with openapi-spec-validator and checks what FastAPI
alone got wrong (the chat, completions and Responses bodies as bare objects, no stream, no error
envelope, a 422 that is never sent). The slow one runs schemathesis, as its users run it,
against a real facade and inference service (synthetic engine) on loopback: generated and
mutated requests on every route, and every answer checked against the document.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from facade.settings import FacadeSettings
from tests.integration.facade.conftest import SYNTHETIC
from tests.support.servers import FacadeServerThread, InferenceServerThread

KEY = "fuzz-key"
# Every check about the answers. Left out: positive_data_acceptance, which expects a 2xx for
# every body the schema allows, but rules across fields (OpenAI's own, e.g. stream_options
# only with stream, null content only on assistant turns) and the model's limits are 400s;
# the stateful-only checks (use_after_free, ...) need resources that can be created.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "ignored_auth",
)


@pytest.fixture(scope="module")
def facade(synthetic_inference: InferenceServerThread) -> Iterator[FacadeServerThread]:
    settings = FacadeSettings(
        backends=[synthetic_inference.address],
        keys_file=None,
        api_keys=[KEY],
        openapi_docs=True,
    )
    server = FacadeServerThread(settings).start()
    yield server
    server.stop()


def _document(facade: FacadeServerThread) -> dict[str, Any]:
    response = httpx.get(f"{facade.url}/openapi.json")
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    return document


def test_the_served_document_is_valid_and_documents_bodies_streams_and_errors(
    facade: FacadeServerThread,
) -> None:
    document = _document(facade)
    validate(document)
    chat = _generating_route(
        document,
        "/v1/chat/completions",
        "ChatCompletionRequest",
        {"model", "messages", "stream", "tools", "response_format"},
        "ChatCompletion",
    )
    assert "ChatCompletionChunk" in document["components"]["schemas"]
    assert "[DONE]" in chat["text/event-stream"]["schema"]["description"]
    _generating_route(
        document,
        "/v1/completions",
        "CompletionRequest",
        {"model", "prompt", "echo", "logprobs", "best_of", "suffix"},
        "Completion",
    )
    responses = _generating_route(
        document,
        "/v1/responses",
        "ResponsesRequest",
        {"model", "input", "instructions", "text", "tools", "max_output_tokens"},
        "ResponseObject",
    )
    # Typed events, not data-only chunks: their model is documented, and the text says so.
    assert "ResponseStreamEvent" in document["components"]["schemas"]
    assert "event: <type>" in responses["text/event-stream"]["schema"]["description"]
    retrieve = document["paths"]["/v1/responses/{response_id}"]["get"]
    ok = retrieve["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/ResponseObject"}
    envelope = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert "422" not in operation["responses"], where  # invalid input is a 400
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")) and path.startswith("/v1/"):
                    assert response["content"]["application/json"]["schema"] == envelope, where
            if "security" in operation:
                assert "401" in operation["responses"], where


def _generating_route(
    document: dict[str, Any], path: str, body: str, fields: set[str], reply: str
) -> dict[str, Any]:
    """Checks a generating route's documented body (with these `fields` among its
    properties) and its 200 (the `reply` model as JSON, or an event stream); returns the
    200's content."""
    operation = document["paths"][path]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": f"#/components/schemas/{body}"}, path
    assert fields <= set(document["components"]["schemas"][body]["properties"]), path
    content: dict[str, Any] = operation["responses"]["200"]["content"]
    assert set(content) == {"application/json", "text/event-stream"}, path
    assert content["application/json"]["schema"] == {"$ref": f"#/components/schemas/{reply}"}
    return content


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_document(
    facade: FacadeServerThread, tmp_path: Path
) -> None:
    executable = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert executable, "schemathesis is a dev dependency (pip install -e '.[dev]')"
    # The app's start-up probed the service: the run reaches the model from its first case.
    assert facade.app.state.facade.pool.ready
    command = [
        executable,
        "run",
        f"{facade.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {KEY}",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "40",
        "--seed",
        "17",
        "--workers",
        "1",
    ]
    repo = str(Path(__file__).resolve().parents[3])
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.integration.facade.schemathesis_hooks",
        "TENSORCHAT_FUZZ_MODEL": SYNTHETIC,
        "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]),
    }
    # In tmp_path: schemathesis keeps its state in ./.schemathesis.
    run = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    # It really ran: a few hundred cases over every route, and all passed every check.
    assert "8 selected / 8 total" in output, output[-3000:]
    counts = re.search(r"^\s*(\d+) generated, (\d+) passed(.*)$", output, re.MULTILINE)
    assert counts is not None, output[-3000:]
    assert int(counts[1]) == int(counts[2]) >= 200, counts[0]
    assert "failed" not in counts[3] and "error" not in counts[3], counts[0]
