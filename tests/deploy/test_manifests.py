"""Render the kustomize overlays, validate them against the Kubernetes schemas, check invariants."""

from __future__ import annotations

import copy
import tomllib
from typing import Any

import kubernetes_validate
import pytest
import yaml

from banditd.config import load_settings
from banditd.server.health_status import LIVENESS, READINESS
from tests.deploy.conftest import CONFIG_TOML, OVERLAYS, find, render, sidecar

# Native sidecars are on by default from 1.29 and the preStop sleep action from 1.30: the oldest
# supported target. 1.37 is the newest schema kubernetes-validate ships.
KUBE_VERSIONS = ("1.30", "1.37")
Docs = tuple[dict[str, Any], ...]


def _config(docs: Docs) -> dict[str, Any]:
    return dict(tomllib.loads(find(docs, "ConfigMap")["data"]["banditd.toml"]))


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def _pod_templates(docs: Docs) -> list[dict[str, Any]]:
    return [d["spec"]["template"] for d in docs if d["kind"] in {"Deployment", "StatefulSet"}]


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_kubernetes_schemas(overlay: str, version: str) -> None:
    """Every rendered object passes strict schema validation (unknown fields are errors)."""
    docs = render(overlay)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_validator_rejects_an_unknown_field() -> None:
    """Strict validation is real: a misspelt field in the sidecar fails."""
    deployment = copy.deepcopy(find(render("dev"), "Deployment", "llm-gateway"))
    deployment["spec"]["template"]["spec"]["initContainers"][0]["restartPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_banditd_runs_as_native_sidecar(overlay: str) -> None:
    """banditd is an init container with restartPolicy Always beside the serving container."""
    pod = find(render(overlay), "Deployment", "llm-gateway")["spec"]["template"]["spec"]
    assert sidecar(render(overlay))["restartPolicy"] == "Always"
    assert [c["name"] for c in pod["containers"]] == ["serving"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    grpc_port = _port(_config(render(overlay))["server"]["listen"])
    assert env["BANDITD_ADDRESS"] == f"127.0.0.1:{grpc_port}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_use_the_grpc_health_service_on_the_listen_port(overlay: str) -> None:
    """Startup, readiness and liveness are native gRPC probes against server.listen."""
    docs = render(overlay)
    container = sidecar(docs)
    config = _config(docs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == _port(config["server"]["listen"])
    assert ports["metrics"] == _port(config["server"]["metrics_listen"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"], probe
    assert container["readinessProbe"]["grpc"]["service"] == READINESS
    annotations = find(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_probe_follows_redis(overlay: str) -> None:
    """Liveness and startup ask "" and readiness banditd.v1.Router, which a Redis outage leaves
    SERVING; the config does not opt readiness into following Redis. (Before, an outage over
    ~30 s restarted banditd in every replica and took every gateway pod out of the Service.)"""
    docs = render(overlay)
    container = sidecar(docs)
    assert container["livenessProbe"]["grpc"]["service"] == LIVENESS
    assert container["startupProbe"]["grpc"]["service"] == LIVENESS
    assert container["readinessProbe"]["grpc"]["service"] == READINESS
    assert not load_settings(CONFIG_TOML).server.readiness_requires_store


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_covers_serving_drain_and_server_grace(overlay: str) -> None:
    """The kubelet waits for the app's preStop, then banditd's drain delay and grace."""
    docs = render(overlay)
    pod = find(docs, "Deployment", "llm-gateway")["spec"]["template"]["spec"]
    server = _config(docs)["server"]
    banditd_s = server.get("drain_delay_s", 0) + server["grace_s"]
    pre_stop_s = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop_s + banditd_s + 5


def test_configmap_is_the_checked_in_config_and_valid() -> None:
    """The ConfigMap carries deploy/base/banditd.toml verbatim and banditd accepts it."""
    for overlay in OVERLAYS:
        data = find(render(overlay), "ConfigMap")["data"]["banditd.toml"]
        assert data == CONFIG_TOML.read_text(encoding="utf-8")
    settings = load_settings(CONFIG_TOML)
    assert settings.store.backend == "redis"
    assert settings.policies, "the example config declares at least one policy"
    mount = {m["name"]: m["mountPath"] for m in sidecar(render("dev"))["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in sidecar(render("dev"))["env"]}
    assert env["BANDITD_CONFIG"] == f"{mount['banditd-config']}/banditd.toml"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis_url_comes_from_a_secret(overlay: str) -> None:
    """BANDITD_STORE__REDIS__URL is a secretKeyRef; prod renders no Secret (made out of band)."""
    docs = render(overlay)
    (url,) = [e for e in sidecar(docs)["env"] if e["name"] == "BANDITD_STORE__REDIS__URL"]
    ref = url["valueFrom"]["secretKeyRef"]
    secrets = [d for d in docs if d["kind"] == "Secret"]
    if overlay == "dev":
        assert find(docs, "Secret", ref["name"])["data"][ref["key"]]
    else:
        assert ref["name"] == "banditd-redis"
        assert secrets == []
        assert "redis://" not in yaml.safe_dump_all(docs)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_limits_and_runs_unprivileged(overlay: str) -> None:
    """Requests and limits for cpu and memory; non-root; no privilege escalation."""
    for pod in _pod_templates(render(overlay)):
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["automountServiceAccountToken"] is False
        for c in _containers(pod):
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (c["name"], kind)
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["name"]
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, c["name"]
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], c["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_tagged_and_not_latest(overlay: str) -> None:
    """Every image names an explicit tag (kustomize `images:` in the overlay)."""
    for pod in _pod_templates(render(overlay)):
        for c in _containers(pod):
            name, _, tag = c["image"].rpartition(":")
            assert name, c["image"]
            assert "/" not in tag, c["image"]
            assert tag != "latest", c["image"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pdb_selects_the_routing_pods(overlay: str) -> None:
    """The PodDisruptionBudget's selector matches the pod template's labels."""
    docs = render(overlay)
    pdb = find(docs, "PodDisruptionBudget")
    labels = find(docs, "Deployment", "llm-gateway")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"].get("maxUnavailable", 0) >= 1 or "minAvailable" in pdb["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_admits_no_other_pod_to_banditd(overlay: str) -> None:
    """Ingress names only the serving and metrics ports; egress only DNS and Redis."""
    docs = render(overlay)
    policy = find(docs, "NetworkPolicy", "llm-gateway")["spec"]
    labels = find(docs, "Deployment", "llm-gateway")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    grpc_port = _port(_config(docs)["server"]["listen"])
    ingress_ports = [p["port"] for rule in policy["ingress"] for p in rule["ports"]]
    assert all(rule.get("ports") for rule in policy["ingress"]), "no all-ports ingress rule"
    assert grpc_port not in ingress_ports
    assert "grpc" not in ingress_ports
    dns, redis = policy["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    if overlay == "dev":
        statefulset = find(docs, "StatefulSet", "redis")
        redis_labels = statefulset["spec"]["template"]["metadata"]["labels"]
        assert redis["to"][0]["podSelector"]["matchLabels"].items() <= redis_labels.items()
        container_port = statefulset["spec"]["template"]["spec"]["containers"][0]["ports"][0]
        assert redis["ports"][0]["port"] == container_port["containerPort"]
    else:
        assert "ipBlock" in redis["to"][0]


def test_dev_runs_redis_in_cluster_and_prod_does_not() -> None:
    """Dev has a Redis StatefulSet that admits only the routing pods; prod has none."""
    dev = render("dev")
    find(dev, "StatefulSet", "redis")
    redis_policy = find(dev, "NetworkPolicy", "redis")["spec"]
    (rule,) = redis_policy["ingress"]
    routing = {"app.kubernetes.io/name": "llm-gateway"}
    assert rule["from"][0]["podSelector"]["matchLabels"] == routing
    assert not [d for d in render("prod") if d["kind"] == "StatefulSet"]
