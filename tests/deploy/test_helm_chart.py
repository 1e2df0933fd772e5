"""The Helm chart, rendered by the real `helm template` and read back with pyyaml: probes,
security context, the SIGTERM grace period against limits.drain_timeout_s, KEDA's ceiling, and a
config the daemon itself accepts.

helm comes from $HELM, PATH or ~/go/bin (`go install helm.sh/helm/v3/cmd/helm@v3.22.0`; CI
installs it). A missing helm fails these tests; it never skips them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.config import load_config
from connector.contract.topics import load_spec

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "order-status-connector"
Render = Callable[..., dict[str, list[dict[str, Any]]]]


def _helm() -> str:
    candidates = [os.environ.get("HELM"), shutil.which("helm"), str(Path.home() / "go/bin/helm")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail("helm not found: go install helm.sh/helm/v3/cmd/helm@v3.22.0 (or set HELM)")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_helm(), *args], capture_output=True, text=True, check=False, timeout=60)


@pytest.fixture
def render() -> Render:
    def _render(*sets: str) -> dict[str, list[dict[str, Any]]]:
        flags = [f for s in sets for f in ("--set", s)]
        done = _run("template", "rel", str(CHART), *flags)
        assert done.returncode == 0, done.stderr
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for doc in yaml.safe_load_all(done.stdout):
            if doc:
                by_kind.setdefault(doc["kind"], []).append(doc)
        return by_kind

    return _render


def _refused(*sets: str) -> str:
    done = _run("template", "rel", str(CHART), *[f for s in sets for f in ("--set", s)])
    assert done.returncode != 0, "helm template accepted values it must refuse"
    return done.stderr


def _pod(manifests: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    (deployment,) = manifests["Deployment"]
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def _config(manifests: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    (config_map,) = manifests["ConfigMap"]
    config: dict[str, Any] = yaml.safe_load(config_map["data"]["connector.yaml"])
    return config


def test_helm_lint_passes() -> None:
    done = _run("lint", "--strict", str(CHART))
    assert done.returncode == 0, done.stdout + done.stderr


def test_default_render_has_the_expected_objects(render: Render) -> None:
    manifests = render()
    assert {kind: len(docs) for kind, docs in manifests.items()} == {
        "ConfigMap": 1,
        "Deployment": 1,
        "PodDisruptionBudget": 1,
        "Service": 1,
        "ServiceAccount": 1,
    }
    (pdb,) = manifests["PodDisruptionBudget"]
    (deployment,) = manifests["Deployment"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_probes_hit_healthz_and_readyz_on_the_served_port(render: Render) -> None:
    manifests = render()
    (container,) = _pod(manifests)["containers"]
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": 8080, "protocol": "TCP"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert _config(manifests)["server"] == {"host": "0.0.0.0", "port": 8080}
    (service,) = manifests["Service"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_pod_runs_as_the_images_non_root_user_with_a_locked_down_container(
    render: Render,
) -> None:
    pod = _pod(render())
    (container,) = pod["containers"]
    dockerfile_user = re.search(r"^USER (\d+):(\d+)$", (REPO / "Dockerfile").read_text(), re.M)
    assert dockerfile_user is not None
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(dockerfile_user.group(1))
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/etc/order-connector", "/tmp"}
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("drain", [None, 5, 90, 7.5])
def test_grace_period_outlasts_the_drain_deadline(render: Render, drain: float | None) -> None:
    manifests = render() if drain is None else render(f"config.limits.drain_timeout_s={drain}")
    drain_s = float(_config(manifests)["limits"]["drain_timeout_s"])  # --set 7.5 gives "7.5"
    assert drain_s == (20 if drain is None else drain)
    grace = _pod(manifests)["terminationGracePeriodSeconds"]
    assert isinstance(grace, int)
    assert grace > drain_s


def test_an_explicit_grace_period_not_above_the_drain_is_refused(render: Render) -> None:
    assert "must be greater than config.limits.drain_timeout_s (20)" in _refused(
        "terminationGracePeriodSeconds=20"
    )
    assert _pod(render("terminationGracePeriodSeconds=21"))["terminationGracePeriodSeconds"] == 21


def test_secrets_reach_the_pod_as_environment(render: Render) -> None:
    manifests = render("secrets.values.META_ACCESS_TOKEN=s3cr3t")
    (secret,) = manifests["Secret"]
    assert secret["stringData"] == {"META_ACCESS_TOKEN": "s3cr3t"}
    (container,) = _pod(manifests)["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    assert "s3cr3t" not in yaml.safe_dump(manifests["ConfigMap"])
    existing = render("secrets.existingSecret=prod-connector")
    assert "Secret" not in existing
    (container,) = _pod(existing)["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "prod-connector"}}]


def test_the_rendered_config_is_one_the_daemon_accepts(render: Render, tmp_path: Path) -> None:
    path = tmp_path / "connector.yaml"
    path.write_text(yaml.safe_dump(_config(render())))
    config = load_config(path, environ={"META_ACCESS_TOKEN": "x"})
    assert config.limits.drain_timeout_s == 20
    assert config.server.host == "0.0.0.0"


def test_input_partitions_default_matches_the_topic_contract(render: Render) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    spec = load_spec()
    (input_topic,) = [t for t in spec.topics.values() if t.role == "input"]
    assert values["inputPartitions"] == input_topic.partitions
    assert values["keda"]["maxReplicas"] <= input_topic.partitions
    assert "exceeds inputPartitions (12)" in _refused("replicaCount=13")


def test_keda_scales_on_group_lag_never_above_the_partitions(render: Render) -> None:
    manifests = render("keda.enabled=true", "keda.maxReplicas=6", "inputPartitions=6")
    (scaled,) = manifests["ScaledObject"]
    assert scaled["spec"]["maxReplicaCount"] == 6
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == "order-status-connector"
    assert trigger["metadata"]["topic"] == "order.status.changed"
    assert trigger["metadata"]["allowIdleConsumers"] == "false"
    (deployment,) = manifests["Deployment"]
    assert "replicas" not in deployment["spec"]  # KEDA owns the replica count
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert "keda.maxReplicas (7) exceeds inputPartitions (6)" in _refused(
        "keda.enabled=true", "keda.maxReplicas=7", "inputPartitions=6"
    )


def test_service_monitor_scrapes_metrics_when_enabled(render: Render) -> None:
    manifests = render("serviceMonitor.enabled=true", "serviceMonitor.labels.release=prom")
    (monitor,) = manifests["ServiceMonitor"]
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    (service,) = manifests["Service"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
