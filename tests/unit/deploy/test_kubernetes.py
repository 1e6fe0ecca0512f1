"""deploy/: every overlay renders with kustomize (kubectl's) and validates against the
Kubernetes 1.30 schemas offline, the overlays match build/targets.yaml, and the objects agree
with the code they run (flags, routes, ports, settings, shutdown grace)."""

from __future__ import annotations

import filecmp
import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from enginebuild.k8s import JobOptions, render_job
from enginebuild.targets import load_matrix
from inference.config import ModelsConfig
from tests.unit.deploy.helpers import REPO, tool, unknown_settings
from tests.unit.deploy.test_images import assert_real_command

DEPLOY = REPO / "deploy"
OVERLAYS = sorted(path.name for path in (DEPLOY / "overlays").iterdir() if path.is_dir())
GPU_KEYS = sorted({target.gpu.key for target in load_matrix().targets})
# The oldest Kubernetes these manifests promise to run on (docs/deploy.md).
KUBERNETES_VERSION = "1.30.0"

Object = dict[str, Any]


@functools.cache
def render(directory: str) -> tuple[Object, ...]:
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(DEPLOY / directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(objects: tuple[Object, ...], kind: str, component: str | None = None) -> list[Object]:
    return [
        o
        for o in objects
        if o["kind"] == kind
        and (component is None or _labels(o).get("app.kubernetes.io/component") == component)
    ]


def _labels(obj: Object) -> dict[str, str]:
    return dict(obj["metadata"].get("labels") or {})


def _container(deployment: Object) -> Object:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def _facade_settings(objects: tuple[Object, ...]) -> dict[str, str]:
    (config,) = [
        o
        for o in of_kind(objects, "ConfigMap")
        if o["metadata"]["name"].startswith("tensorchat-facade-settings")
    ]
    return dict(config["data"])


def test_overlays_are_cpu_dev_and_one_per_gpu_of_the_targets() -> None:
    assert sorted(["cpu-dev", *GPU_KEYS]) == OVERLAYS


def test_gpu_overlays_are_what_render_py_writes(tmp_path: Path) -> None:
    # The GPU overlays and their build Jobs are generated from build/targets.yaml and
    # enginebuild/k8s.py; a stale copy is a drift between the matrix and the cluster.
    subprocess.run(
        [sys.executable, str(DEPLOY / "render.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    for gpu in GPU_KEYS:
        for name in (
            "kustomization.yaml",
            "engine-builds/kustomization.yaml",
            "engine-builds/jobs.yaml",
        ):
            assert filecmp.cmp(
                tmp_path / gpu / name, DEPLOY / "overlays" / gpu / name, shallow=False
            ), f"deploy/overlays/{gpu}/{name} is stale: run `python deploy/render.py`"


@pytest.mark.parametrize("overlay", [*OVERLAYS, *(f"{gpu}/engine-builds" for gpu in GPU_KEYS)])
def test_every_object_is_valid_for_kubernetes(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    assert objects
    for obj in objects:
        # strict: an unknown field (a typo) is an error, not silently dropped by the server.
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        assert obj["metadata"].get("namespace") == "tensorchat", obj["metadata"]["name"]


def test_validation_rejects_a_misspelt_field() -> None:
    (deployment, *_) = of_kind(render("overlays/cpu-dev"), "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_facade_is_replicated_probed_and_protected(overlay: str) -> None:
    from facade.routes.health import router

    objects = render(f"overlays/{overlay}")
    (facade,) = of_kind(objects, "Deployment", "facade")
    assert facade["spec"]["replicas"] >= 2
    container = _container(facade)
    assert_real_command(["tensorchat", *container["args"]])
    routes = {route.path for route in router.routes}  # type: ignore[attr-defined]
    assert container["readinessProbe"]["httpGet"]["path"] in routes
    assert container["livenessProbe"]["httpGet"]["path"] in routes
    assert (
        container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    )
    pod_labels = facade["spec"]["template"]["metadata"]["labels"]
    pdbs = [
        p
        for p in of_kind(objects, "PodDisruptionBudget")
        if _selects(p["spec"]["selector"], pod_labels)
    ]
    assert pdbs, "no PodDisruptionBudget covers the facade"
    (hpa,) = of_kind(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == facade["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    # Settings come from the ConfigMap, keys from the Secret (mounted as the keys file).
    settings = _facade_settings(objects)
    (secret,) = of_kind(objects, "Secret")
    volumes = {v["name"]: v for v in facade["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (keys_volume,) = [
        n
        for n, v in volumes.items()
        if v.get("secret", {}).get("secretName") == secret["metadata"]["name"]
    ]
    keys_file = settings["TENSORCHAT_KEYS_FILE"]
    assert keys_file == f"{mounts[keys_volume]}/{next(iter(secret['data']))}"


def _selects(selector: Object, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_are_real_names(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    names = set(_facade_settings(objects))
    for deployment in of_kind(objects, "Deployment"):
        names |= {env["name"] for env in _container(deployment).get("env", [])}
    assert not unknown_settings(names)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_facade_balances_over_every_inference_group(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    backends = _facade_settings(objects)["TENSORCHAT_BACKENDS"].split(",")
    headless = [
        s for s in of_kind(objects, "Service", "inference") if s["spec"].get("clusterIP") == "None"
    ]
    deployments = of_kind(objects, "Deployment", "inference")
    assert len(headless) == len(deployments) >= 1
    expected = {f"dns:///{s['metadata']['name']}:{s['spec']['ports'][0]['port']}" for s in headless}
    assert set(backends) == expected
    for service in headless:
        # Each headless Service selects exactly one group's pods: all serve the same models.
        chosen = [
            d
            for d in deployments
            if _selects(
                {"matchLabels": service["spec"]["selector"]},
                d["spec"]["template"]["metadata"]["labels"],
            )
        ]
        assert len(chosen) == 1, service["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inference_pods_drain_before_they_are_killed(overlay: str) -> None:
    for deployment in of_kind(render(f"overlays/{overlay}"), "Deployment", "inference"):
        spec = deployment["spec"]["template"]["spec"]
        container = _container(deployment)
        args = container["args"]
        assert_real_command(["tensorchat", *args])
        grace = float(_flag(args, "--shutdown-grace"))
        assert spec["terminationGracePeriodSeconds"] > grace
        port = int(_flag(args, "--port"))
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == port, probe
        liveness = container["livenessProbe"]
        # A draining server refuses health checks: liveness must not fire within the grace.
        assert liveness["periodSeconds"] * liveness["failureThreshold"] >= grace


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_facade_reaches_inference_and_redis(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    (facade,) = of_kind(objects, "Deployment", "facade")
    facade_labels = facade["spec"]["template"]["metadata"]["labels"]
    policies = of_kind(objects, "NetworkPolicy")
    for component, port in (("inference", None), ("redis", 6379)):
        for deployment in of_kind(objects, "Deployment", component):
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            served = port or int(_flag(_container(deployment)["args"], "--port"))
            covering = [p for p in policies if _selects(p["spec"]["podSelector"], labels)]
            assert covering, f"no NetworkPolicy isolates {deployment['metadata']['name']}"
            for policy in covering:
                assert policy["spec"]["policyTypes"] == ["Ingress"]
                for rule in policy["spec"]["ingress"]:
                    assert [p["port"] for p in rule["ports"]] == [served]
                    assert all(
                        _selects(peer["podSelector"], facade_labels) for peer in rule["from"]
                    )


@pytest.mark.parametrize("gpu", GPU_KEYS)
def test_gpu_overlay_runs_its_gpu_type_and_builds_its_engines(gpu: str) -> None:
    matrix = load_matrix()
    targets = [t for t in matrix.targets if t.gpu.key == gpu]
    objects = render(f"overlays/{gpu}")
    claims = {c["metadata"]["name"] for c in of_kind(objects, "PersistentVolumeClaim")}
    served: set[str] = set()
    for deployment in of_kind(objects, "Deployment", "inference"):
        spec = deployment["spec"]["template"]["spec"]
        assert spec["nodeSelector"]["nvidia.com/gpu.product"] == targets[0].gpu.product
        assert _container(deployment)["resources"]["limits"]["nvidia.com/gpu"] == 1
        pvcs = {
            v["persistentVolumeClaim"]["claimName"]
            for v in spec["volumes"]
            if "persistentVolumeClaim" in v
        }
        assert pvcs <= claims
    for config in of_kind(objects, "ConfigMap"):
        if "models.yaml" in config["data"]:
            models = ModelsConfig.model_validate(yaml.safe_load(config["data"]["models.yaml"]))
            served |= {m.id for m in models.models}
            for model in models.models:
                target = next(t for t in targets if t.model.id == model.id)
                assert str(model.checkpoint) == f"/models/{target.model.slug}"
                assert model.options["engines_root"] == "/engines"
    assert served == {t.model.id for t in targets}
    jobs = render(f"overlays/{gpu}/engine-builds")
    expected = [yaml.safe_load(render_job(t, JobOptions())) for t in targets]
    for job in jobs:
        del job["metadata"]["namespace"]
    assert sorted(jobs, key=str) == sorted(expected, key=str)
    for job in jobs:
        for volume in job["spec"]["template"]["spec"]["volumes"]:
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims


def test_cpu_dev_serves_the_embedded_model_without_a_gpu() -> None:
    (deployment,) = of_kind(render("overlays/cpu-dev"), "Deployment", "inference")
    container = _container(deployment)
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert "inference-cpu" in container["image"]
    assert "TENSORCHAT_MODELS" not in {env["name"] for env in container.get("env", [])}
