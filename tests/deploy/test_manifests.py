"""Render the kustomize overlays, validate them against the Kubernetes schemas, check invariants."""

from __future__ import annotations

import copy
import ipaddress
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from banditd.config import load_settings
from banditd.server.health_status import LIVENESS, READINESS
from tests.deploy.conftest import (
    CONFIG_TOML,
    CONFIGS,
    OVERLAYS,
    PROD_CONFIG_TOML,
    find,
    render,
    sidecar,
)

# Native sidecars are on by default from 1.29 and the preStop sleep action from 1.30: the oldest
# supported target. 1.37 is the newest schema kubernetes-validate ships.
KUBE_VERSIONS = ("1.30", "1.37")
# Custom resources: kubernetes-validate ships only the built-in schemas, so these are checked by
# the tests below that read them (test_certificate_*, test_podmonitor_*), not against a schema.
CUSTOM_KINDS = {("cert-manager.io/v1", "Certificate"), ("monitoring.coreos.com/v1", "PodMonitor")}
# The PodMonitor fields (monitoring.coreos.com/v1, prometheus-operator's API reference) the
# overlays may use: a misspelt field fails here, as strict validation would fail a built-in kind.
PODMONITOR_SPEC = {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel",
                   "podTargetLabels", "sampleLimit"}  # fmt: skip
POD_METRICS_ENDPOINT = {"port", "portNumber", "path", "scheme", "interval", "scrapeTimeout",
                        "tlsConfig", "honorLabels", "relabelings", "metricRelabelings"}  # fmt: skip
MONITORED = ("prod",)  # overlays that include deploy/components/podmonitor
Docs = tuple[dict[str, Any], ...]


def _config(docs: Docs) -> dict[str, Any]:
    return dict(tomllib.loads(find(docs, "ConfigMap")["data"]["banditd.toml"]))


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def _loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def _wildcard(address: str) -> bool:
    return address.rpartition(":")[0].strip("[]") in {"0.0.0.0", "::"}


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
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            # Skipped for this reason only: should a schema ever ship, validate against it.
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(doc, version, strict=True)
            continue
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
def test_probes_use_the_plaintext_health_port(overlay: str) -> None:
    """Startup, readiness and liveness are native gRPC probes against server.health_listen: plain
    grpc.health.v1 on the pod IP, since the kubelet speaks neither TLS nor mTLS and server.listen
    is loopback (dev) or mTLS (prod)."""
    docs = render(overlay)
    container = sidecar(docs)
    server = _config(docs)["server"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert _wildcard(server["health_listen"])  # the kubelet probes the pod IP
    assert ports["health"] == _port(server["health_listen"])
    assert _port(server["health_listen"]) != _port(server["listen"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == ports["health"], probe
        assert container[probe]["grpc"].get("mode", "Plaintext") == "Plaintext", probe
    assert ports["metrics"] == _port(server["metrics_listen"])
    annotations = find(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grpc_port_is_listed_only_where_it_leaves_loopback(overlay: str) -> None:
    """dev serves Route/Feedback on 127.0.0.1 only (no container port); prod on the pod IP with
    mTLS, as the container port `grpc`. Admin stays on loopback in both."""
    docs = render(overlay)
    server = _config(docs)["server"]
    ports = {p["name"]: p["containerPort"] for p in sidecar(docs)["ports"]}
    assert _loopback(server["admin_listen"])
    assert _port(server["admin_listen"]) not in ports.values()
    if overlay == "dev":
        assert _loopback(server["listen"])
        assert "grpc" not in ports
    else:
        assert _wildcard(server["listen"])
        assert ports["grpc"] == _port(server["listen"])
        assert server["tls"]["require_client_cert"] is True


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
    assert _config(docs)["server"].get("readiness_requires_store", False) is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_covers_serving_drain_and_server_grace(overlay: str) -> None:
    """The kubelet waits for the app's preStop, then banditd's drain delay and grace."""
    docs = render(overlay)
    pod = find(docs, "Deployment", "llm-gateway")["spec"]["template"]["spec"]
    server = _config(docs)["server"]
    banditd_s = server.get("drain_delay_s", 0) + server["grace_s"]
    pre_stop_s = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop_s + banditd_s + 5


def test_configmap_is_the_checked_in_config() -> None:
    """Each overlay's ConfigMap carries its checked-in banditd.toml verbatim (dev the base file
    the image bakes, prod its own), where BANDITD_CONFIG points."""
    for overlay, path in CONFIGS.items():
        data = find(render(overlay), "ConfigMap")["data"]["banditd.toml"]
        assert data == path.read_text(encoding="utf-8"), overlay
        mount = {m["name"]: m["mountPath"] for m in sidecar(render(overlay))["volumeMounts"]}
        env = {e["name"]: e.get("value") for e in sidecar(render(overlay))["env"]}
        assert env["BANDITD_CONFIG"] == f"{mount['banditd-config']}/banditd.toml"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_shipped_configs_are_valid(overlay: str, tmp_path: Path) -> None:
    """banditd's Settings accept both ConfigMaps (dev's is the config the image bakes): Redis
    store, a policy, readiness off Redis; prod with mTLS and its two callers."""
    path = tmp_path / "banditd.toml"
    path.write_text(find(render(overlay), "ConfigMap")["data"]["banditd.toml"], encoding="utf-8")
    settings = load_settings(path)
    assert settings.store.backend == "redis"
    assert settings.policies, "the example config declares at least one policy"
    assert not settings.server.readiness_requires_store
    if overlay == "prod":
        assert settings.server.tls.require_client_cert
        assert [c.name for c in settings.auth.callers] == ["gateway", "reward-pipeline"]
    else:
        assert not settings.server.tls.cert_file
        assert not settings.auth.callers


def test_prod_config_is_the_base_config_plus_tls_and_callers() -> None:
    """prod's banditd.toml differs from the base file only in server.listen, server.tls and
    [auth]: a change to the base (a policy, a bound) must reach prod too."""
    base = tomllib.loads(CONFIG_TOML.read_text(encoding="utf-8"))
    prod = tomllib.loads(PROD_CONFIG_TOML.read_text(encoding="utf-8"))
    added = {"tls": prod["server"].pop("tls"), "auth": prod.pop("auth")}
    assert prod["server"].pop("listen") == "0.0.0.0:50051"
    assert base["server"].pop("listen") == "127.0.0.1:50051"
    assert prod == base
    assert added["tls"]["require_client_cert"] is True
    assert added["auth"]["callers"]


def test_prod_mounts_the_certificate_secret_where_the_config_reads_it() -> None:
    """The Secret cert-manager writes is mounted as a directory (so renewals reach the files,
    which subPath mounts never get) read-only in both containers, and server.tls and the serving
    container's BANDITD_TLS_* name files cert-manager puts in it."""
    docs = render("prod")
    pod = find(docs, "Deployment", "llm-gateway")["spec"]["template"]["spec"]
    certificate = find(docs, "Certificate", "banditd-tls")
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]
    keys = {"tls.crt", "tls.key", "ca.crt"}  # what cert-manager writes (ca.crt: the CA issuer)
    assert not volume["secret"].get("items"), "every key, as cert-manager writes them"
    tls = _config(docs)["server"]["tls"]
    serving = pod["containers"][0]
    for container in (sidecar(docs), serving):
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        assert mount.get("readOnly") is True
        assert not {"subPath", "subPathExpr"} & mount.keys()
        if container is serving:
            env = {e["name"]: e.get("value") for e in serving["env"]}
            files = [env[f"BANDITD_TLS_{k}_FILE"] for k in ("CA", "CERT", "KEY")]
        else:
            files = [tls["client_ca_file"], tls["cert_file"], tls["key_file"]]
        assert {str(Path(f).parent) for f in files} == {mount["mountPath"]}, container["name"]
        assert {Path(f).name for f in files} == keys, container["name"]


def test_certificate_names_the_service_and_the_gateway_identity() -> None:
    """The Certificate covers what callers check and what banditd authorises: the banditd-grpc
    Service's DNS names (the reward pipeline dials it; the serving container checks the name in
    BANDITD_TLS_SERVER_NAME), the gateway caller's SPIFFE ID, server and client auth."""
    docs = render("prod")
    spec = find(docs, "Certificate", "banditd-tls")["spec"]
    service = find(docs, "Service", "banditd-grpc")["metadata"]
    namespace = service["namespace"]
    assert f"{service['name']}.{namespace}.svc" in spec["dnsNames"]
    env = {e["name"]: e.get("value") for e in find(docs, "Deployment")["spec"]["template"]
           ["spec"]["containers"][0]["env"]}  # fmt: skip
    assert env["BANDITD_TLS_SERVER_NAME"] in spec["dnsNames"]
    callers = {c["name"]: c for c in _config(docs)["auth"]["callers"]}
    assert set(callers["gateway"]["identities"]) <= set(spec["uris"])
    assert all(f"/ns/{namespace}/" in uri for uri in spec["uris"])
    assert {"server auth", "client auth"} <= set(spec["usages"])
    assert spec["issuerRef"] == {"group": "cert-manager.io", "kind": "ClusterIssuer",
                                 "name": "banditd-ca"}  # fmt: skip
    assert spec["privateKey"]["rotationPolicy"] == "Always"
    # No schema validates a custom resource here, so its fields are checked by hand against the
    # cert-manager.io/v1 CRD: the required ones, enum values, and no unknown field names (the API
    # server would refuse or drop a misspelt one).
    assert spec["secretName"]
    assert spec["issuerRef"]["name"]
    usages = {"digital signature", "key encipherment", "server auth", "client auth"}  # of its enum
    assert set(spec["usages"]) <= usages
    assert spec["privateKey"]["algorithm"] in {"RSA", "ECDSA", "Ed25519"}
    assert spec["privateKey"]["encoding"] in {"PKCS1", "PKCS8"}
    known = {"secretName", "issuerRef", "duration", "renewBefore", "privateKey", "usages",
             "dnsNames", "uris", "ipAddresses", "commonName", "subject"}  # fmt: skip
    assert set(spec) <= known, set(spec) - known


def test_grpc_service_reaches_the_mtls_port_of_the_routing_pods() -> None:
    """prod's Service banditd-grpc selects the routing pods and targets banditd's grpc port;
    dev has none (nothing outside the pod talks to banditd there)."""
    docs = render("prod")
    spec = find(docs, "Service", "banditd-grpc")["spec"]
    labels = find(docs, "Deployment", "llm-gateway")["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"].items() <= labels.items()
    (port,) = spec["ports"]
    ports = {p["name"]: p["containerPort"] for p in sidecar(docs)["ports"]}
    assert ports[port["targetPort"]] == _port(_config(docs)["server"]["listen"])
    assert [d["metadata"]["name"] for d in render("dev") if d["kind"] == "Service"] == [
        "llm-gateway",
        "redis",
    ]


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
    """Ingress names the serving and metrics ports, and in prod the mTLS gRPC port from the
    reward pipeline's namespace only; never the plaintext health port (the kubelet, on the
    pod's node, needs no rule) nor Admin. Egress: DNS and Redis only."""
    docs = render(overlay)
    policy = find(docs, "NetworkPolicy", "llm-gateway")["spec"]
    labels = find(docs, "Deployment", "llm-gateway")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    server = _config(docs)["server"]
    grpc_port = _port(server["listen"])
    never = {_port(server["health_listen"]), _port(server["admin_listen"]), "health", "grpc"}
    assert all(rule.get("ports") for rule in policy["ingress"]), "no all-ports ingress rule"
    grpc_rules = []
    for rule in policy["ingress"]:
        ports = {p["port"] for p in rule["ports"]}
        assert not ports & never, rule
        if grpc_port in ports:
            grpc_rules.append(rule)
    if overlay == "dev":
        assert grpc_rules == []
    else:
        assert server["tls"]["require_client_cert"] is True  # only ever with mTLS
        (rule,) = grpc_rules
        assert {p["port"] for p in rule["ports"]} == {grpc_port}
        assert rule["from"] == [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": "reward-pipeline"}
                }
            }
        ]
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


def test_reward_pipeline_may_only_send_feedback() -> None:
    """The namespace the NetworkPolicy admits to the gRPC port is the one its caller's SPIFFE ID
    names, and that caller has the feedback role only; the gateway (this pod) routes too."""
    docs = render("prod")
    policy = find(docs, "NetworkPolicy", "llm-gateway")["spec"]
    namespaces = {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in policy["ingress"]
        for peer in rule.get("from", [])
        if "namespaceSelector" in peer and rule["ports"][0]["port"] == 50051
    }
    callers = {c["name"]: c for c in _config(docs)["auth"]["callers"]}
    pipeline = callers["reward-pipeline"]
    assert namespaces == {"reward-pipeline"}
    assert all("/ns/reward-pipeline/" in i for i in pipeline["identities"])
    assert pipeline["roles"] == ["feedback"]
    assert sorted(callers["gateway"]["roles"]) == ["feedback", "route"]
    assert not [c for c in callers.values() if "admin" in c["roles"]]


def test_dev_runs_redis_in_cluster_and_prod_does_not() -> None:
    """Dev has a Redis StatefulSet that admits only the routing pods; prod has none."""
    dev = render("dev")
    find(dev, "StatefulSet", "redis")
    redis_policy = find(dev, "NetworkPolicy", "redis")["spec"]
    (rule,) = redis_policy["ingress"]
    routing = {"app.kubernetes.io/name": "llm-gateway"}
    assert rule["from"][0]["podSelector"]["matchLabels"] == routing
    assert not [d for d in render("prod") if d["kind"] == "StatefulSet"]


def _podmonitor(overlay: str) -> dict[str, Any]:
    return find(render(overlay), "PodMonitor", "banditd")


@pytest.mark.parametrize("overlay", MONITORED)
def test_podmonitor_uses_only_known_fields(overlay: str) -> None:
    """No schema ships for PodMonitor: its fields are checked against the Operator's API here."""
    monitor = _podmonitor(overlay)
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) <= PODMONITOR_SPEC
    assert monitor["spec"]["podMetricsEndpoints"]
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert set(endpoint) <= POD_METRICS_ENDPOINT


@pytest.mark.parametrize("overlay", MONITORED)
def test_podmonitor_selects_the_routing_pods_and_scrapes_the_metrics_port(overlay: str) -> None:
    """Its selector matches the pod template's labels in the Deployment's namespace, and each
    endpoint names a port of the banditd container: the one /metrics listens on, plain http
    unless server.metrics_tls, admitted by the NetworkPolicy from the monitoring namespace."""
    docs = render(overlay)
    monitor = _podmonitor(overlay)
    deployment = find(docs, "Deployment", "llm-gateway")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "matchExpressions" not in monitor["spec"]["selector"]
    if "namespaceSelector" in monitor["spec"]:
        names = monitor["spec"]["namespaceSelector"]["matchNames"]
        assert deployment["metadata"]["namespace"] in names
    else:  # a PodMonitor selects pods in its own namespace
        assert monitor["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    server = _config(docs)["server"]
    ports = {p["name"]: p["containerPort"] for p in sidecar(docs)["ports"]}
    policy = find(docs, "NetworkPolicy", "llm-gateway")["spec"]
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert endpoint["port"] in ports, f"no container port named {endpoint['port']!r}"
        assert ports[endpoint["port"]] == _port(server["metrics_listen"])
        assert _wildcard(server["metrics_listen"])  # the scrape comes to the pod IP
        assert endpoint.get("path", "/metrics") == "/metrics"
        scheme = "https" if server.get("metrics_tls") else "http"
        assert endpoint.get("scheme", "http") == scheme
        admitted = [
            rule for rule in policy["ingress"]
            if ports[endpoint["port"]] in {p["port"] for p in rule["ports"]}
        ]  # fmt: skip
        assert [
            peer["namespaceSelector"]["matchLabels"] for r in admitted for peer in r["from"]
        ] == [{"kubernetes.io/metadata.name": "monitoring"}]


def test_podmonitor_is_only_where_the_operator_is_assumed() -> None:
    """dev (a kind cluster, usually without the Operator's CRDs) has none; prod has one."""
    for overlay in OVERLAYS:
        kinds = [d["kind"] for d in render(overlay)]
        assert kinds.count("PodMonitor") == (1 if overlay in MONITORED else 0), overlay
