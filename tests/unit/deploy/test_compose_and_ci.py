"""compose.yaml and the GitHub workflows: valid against their published schemas (the copies
check-jsonschema ships, so offline), and naming only real files, commands and settings."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.unit.deploy.helpers import REPO, image_command, unknown_settings
from tests.unit.deploy.test_images import assert_real_command

COMPOSE = REPO / "compose.yaml"
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def vendored_schema(name: str) -> dict[str, Any]:
    schemas = resources.files("check_jsonschema.builtin_schemas.vendor")
    return dict(json.loads(schemas.joinpath(f"{name}.json").read_text()))


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def test_compose_file_follows_the_compose_spec() -> None:
    jsonschema.validate(compose(), vendored_schema("compose-spec"))


def test_compose_runs_facade_cpu_inference_and_redis() -> None:
    services = compose()["services"]
    assert set(services) == {"facade", "inference", "redis"}
    assert services["inference"]["build"]["dockerfile"] == "inference/Dockerfile.cpu"
    facade_env = services["facade"]["environment"]
    port = services["inference"]["command"][services["inference"]["command"].index("--port") + 1]
    assert facade_env["TENSORCHAT_BACKENDS"] == f"inference:{port}"
    assert facade_env["TENSORCHAT_REDIS_URL"].startswith("redis://redis:")


@pytest.mark.parametrize("name", ["facade", "inference"])
def test_compose_services_build_real_images_and_commands(name: str) -> None:
    service = compose()["services"][name]
    dockerfile = REPO / service["build"]["context"] / service["build"]["dockerfile"]
    assert dockerfile.is_file()
    entrypoint = image_command(dockerfile)[:1]
    assert_real_command(entrypoint + service.get("command", image_command(dockerfile)[1:]))
    assert not unknown_settings(set(service.get("environment", {})))
    assert service["read_only"] is True and "/tmp" in service["tmpfs"]


def load_workflow(path: Path) -> dict[str, Any]:
    """A workflow as GitHub reads it: PyYAML (YAML 1.1) reads the key `on` as True."""
    workflow = dict(yaml.safe_load(path.read_text()))
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[w.name for w in WORKFLOWS])
def test_workflows_follow_the_github_schema(workflow: Path) -> None:
    jsonschema.validate(load_workflow(workflow), vendored_schema("github-workflows"))


def test_ci_workflow_runs_make_test_and_lint_on_push_and_pull_request() -> None:
    workflow = load_workflow(REPO / ".github/workflows/test.yml")
    assert {"push", "pull_request"} <= set(workflow["on"])
    runs = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert "make test" in runs and "make lint" in runs
    assert any("install" in run and "redis-server" in run for run in runs)
