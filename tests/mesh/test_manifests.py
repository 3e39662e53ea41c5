"""The manifests under mesh/: generated without drift, every overlay builds, every object
validates against its schema, and the policy invariants hold. Each check is also shown to
fail on a mutated copy, so a passing run means something."""

from __future__ import annotations

import copy
import functools
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh import generate, policy
from mesh.contracts import IDEMPOTENT, NO_SIDE_EFFECTS, Method, load_methods
from mesh.kustomize import KustomizeError, build, merge
from mesh.validate import find_crds, validate
from withdrawal_shared.states import State

REPO = Path(__file__).resolve().parents[2]
MESH = REPO / "mesh"
OVERLAYS = ("dev", "prod")
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def crds() -> Path:
    try:
        return find_crds(REPO)
    except FileNotFoundError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def methods() -> list[Method]:
    return load_methods()


@pytest.fixture(scope="module", params=OVERLAYS)
def built(request: pytest.FixtureRequest) -> list[Obj]:
    return built_copy(request.param)


@functools.cache
def _build_once(overlay: str) -> list[Obj]:
    return build(MESH / "overlays" / overlay)


def built_copy(overlay: str) -> list[Obj]:
    """The overlay built once per test run, copied so that a test may mutate it."""
    return copy.deepcopy(_build_once(overlay))


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


# ---- generation


def test_generated_files_have_no_drift() -> None:
    assert generate.drift() == [], "run `.venv/bin/python -m mesh.generate` and commit"


def test_drift_is_detected(tmp_path: Path) -> None:
    copy_root = tmp_path / "mesh"
    shutil.copytree(MESH, copy_root)
    (copy_root / "istio/virtual-services.yaml").write_text("# edited by hand\n")
    (copy_root / "base/signer/pdb.yaml").unlink()
    (copy_root / "base/extra.yaml").write_text("kind: ConfigMap\n")
    assert generate.drift(copy_root) == [
        "base/signer/pdb.yaml: missing",
        "istio/virtual-services.yaml: differs",
        "base/extra.yaml: not generated",
    ]


# ---- building


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds(overlay: str) -> None:
    objects = build(MESH / "overlays" / overlay)
    namespaced = [o for o in objects if o["kind"] != "Namespace"]
    assert {o["metadata"]["namespace"] for o in namespaced} == {generate.NAMESPACE}
    workloads = policy.services_workloads(objects)
    names = {d["metadata"]["name"] for d in workloads}
    assert names == {"gateway", "processor", "signer", "monitor", "webhooks"}
    for d in workloads:
        image = d["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image.endswith(":dev" if overlay == "dev" else ":0.1.0"), image
        expected = 1 if overlay == "dev" else generate.PROD_REPLICAS[d["metadata"]["name"]]
        assert d["spec"]["replicas"] == expected


def test_prod_overlay_uses_the_hsm_and_external_services() -> None:
    objects = build(MESH / "overlays/prod")
    signer = find(objects, "Deployment", "signer")["spec"]["template"]["spec"]
    env = {e["name"] for e in signer["containers"][0]["env"]}
    assert "SIGNER_PKCS11_PIN" in env
    assert "SIGNER_KEYSTORE_PASSWORD" not in env
    assert {v["name"] for v in signer["volumes"]} == {"var", "tmp", "hsm-client", "store-ca"}
    config = find(objects, "ConfigMap", "signer-config")["data"]
    assert config["SIGNER_KEY_BACKEND"] == "pkcs11"
    assert "SIGNER_KEYSTORE_PATH" not in config
    entries = {e["metadata"]["name"] for e in policy.of_kind(objects, "ServiceEntry")}
    assert entries == {"mysql", "redis", "chain-rpc", "hsm", "kms"}
    assert not [o for o in objects if o["metadata"]["name"] in ("mariadb", "anvil")]
    dev = build(MESH / "overlays/dev")
    assert {"mariadb", "redis", "anvil"} <= {d["metadata"]["name"] for d in dev}
    assert not policy.of_kind(dev, "ServiceEntry")


def _kustomization(tmp_path: Path, spec: Obj, resources: dict[str, Any]) -> Path:
    for name, docs in resources.items():
        (tmp_path / name).write_text(yaml.safe_dump_all(docs if isinstance(docs, list) else [docs]))
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path


DEPLOYMENT: Obj = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "x"},
    "spec": {
        "template": {
            "spec": {
                "containers": [
                    {"name": "x", "image": "img:1", "env": [{"name": "A", "value": "1"}]}
                ],
                "volumes": [{"name": "v", "emptyDir": {}}],
            }
        }
    },
}


def test_kustomize_applies_patches_images_replicas_namespace(tmp_path: Path) -> None:
    patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "x", "env": [{"name": "B", "value": "2"}]}],
                    "volumes": [{"name": "v", "$patch": "delete"}],
                }
            }
        },
    }
    root = _kustomization(
        tmp_path,
        {
            "resources": ["d.yaml"],
            "namespace": "ns",
            "patches": [{"path": "p.yaml"}],
            "images": [{"name": "img", "newName": "reg/img", "newTag": "2"}],
            "replicas": [{"name": "x", "count": 3}],
        },
        {"d.yaml": DEPLOYMENT, "p.yaml": patch},
    )
    (d,) = build(root)
    container = d["spec"]["template"]["spec"]["containers"][0]
    assert [e["name"] for e in container["env"]] == ["A", "B"]
    assert container["image"] == "reg/img:2"
    assert d["spec"]["template"]["spec"]["volumes"] == []
    assert d["spec"]["replicas"] == 3
    assert d["metadata"]["namespace"] == "ns"


def test_merge_of_custom_resources_replaces_lists_and_deletes_nulls() -> None:
    base = {"spec": {"hosts": ["a", "b"], "keep": 1, "drop": 2}}
    assert merge(base, {"spec": {"hosts": ["c"], "drop": None}}, strategic=False) == {
        "spec": {"hosts": ["c"], "keep": 1}
    }


@pytest.mark.parametrize(
    ("spec", "resources", "error"),
    [
        ({"resources": ["d.yaml"], "commonLabels": {"a": "b"}}, {}, "unsupported"),
        ({"resources": ["missing.yaml"]}, {}, "does not exist"),
        ({"resources": ["d.yaml", "e.yaml"]}, {"e.yaml": DEPLOYMENT}, "defined twice"),
        ({"resources": ["d.yaml"], "replicas": [{"name": "y", "count": 1}]}, {}, "does not"),
        (
            {"resources": ["d.yaml"], "patches": [{"path": "p.yaml"}]},
            {"p.yaml": {**DEPLOYMENT, "metadata": {"name": "other"}}},
            "matches nothing",
        ),
    ],
)
def test_kustomize_refuses_what_it_cannot_build(
    tmp_path: Path, spec: Obj, resources: dict[str, Any], error: str
) -> None:
    root = _kustomization(tmp_path, spec, {"d.yaml": DEPLOYMENT, **resources})
    with pytest.raises(KustomizeError, match=error):
        build(root)


# ---- schemas


def test_every_object_validates(built: list[Obj], crds: Path) -> None:
    problems = [p for obj in built for p in validate(obj, crds)]
    assert problems == []


def test_missing_crds_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"shared/schemas/istio-crds\.gen\.yaml"):
        find_crds(tmp_path / "repo")


def _set(obj: Obj, path: str, value: Any) -> Obj:
    mutated = copy.deepcopy(obj)
    target: Any = mutated
    parts = path.split(".")
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    last = parts[-1]
    if last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return mutated


@pytest.mark.parametrize(
    ("kind", "name", "path", "value"),
    [
        ("Deployment", "signer", "spec.template.spec.containers.0.livenessProbe.grpc.port", "x"),
        ("Deployment", "signer", "spec.template.spec.containers.0.securityContext.readOnly", True),
        ("Service", "gateway", "spec.ports.0.port", "grpc"),
        ("Job", "migrate", "spec.backoffLimit", "six"),
        ("DestinationRule", "signer", "spec.trafficPolicy.outlierDetection.interval", 10),
        ("VirtualService", "signer", "spec.http.0.retries.attempt", 3),
        ("AuthorizationPolicy", "signer-allow", "spec.action", "PERMIT"),
        ("PeerAuthentication", "default", "spec.mtls.mode", "MOSTLY"),
        ("Sidecar", "processor", "spec.egress", "everything"),
        ("Telemetry", "default", "spec.tracing.0.randomSampling", 5),
        ("Gateway", "admin", "spec.servers.0.port.number", "443"),
        ("ScaledObject", "processor", "spec.triggers.0.metadata.threshold", 2000),
        ("ScaledObject", "processor", "spec.minReplicaCount", 9),
        ("HorizontalPodAutoscaler", "gateway", "spec.maxReplicas", "many"),
    ],
)
def test_validation_fails_on_a_bad_object(
    crds: Path, kind: str, name: str, path: str, value: Any
) -> None:
    obj = find(built_copy("prod"), kind, name)
    assert validate(obj, crds) == []
    assert validate(_set(obj, path, value), crds) != []


# ---- policy invariants


def test_policy_invariants_hold(built: list[Obj], methods: list[Method]) -> None:
    graces = {w.name: w.shutdown_grace for w in generate.workloads()}
    assert policy.check_workloads(built) == []
    assert policy.check_non_root(built) == []
    assert policy.check_hardening(built) == []
    assert policy.check_sole_caller(built, "signer", "processor") == []
    assert policy.check_retries(built, methods) == []
    assert policy.check_no_secret_values(built) == []
    assert policy.check_termination_grace(built, graces) == []
    assert (
        policy.check_gateway_ingress(
            built, methods, generate.PUBLIC_INGRESS_SA, generate.ADMIN_INGRESS_SA
        )
        == []
    )


def test_prod_reaches_the_stores_over_tls() -> None:
    """In prod every workload with DATABASE_URL (REDIS_URL) verifies the server against the
    CA mounted read-only from `aws-store-ca`; dev's in-cluster stores are plaintext, which
    the same check reports."""
    prod = built_copy("prod")
    assert policy.check_store_tls(prod) == []
    for name in ("gateway", "processor", "signer", "monitor", "webhooks"):
        pod = find(prod, "Deployment", name)["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["store-ca"]["secret"]["secretName"] == generate.STORE_CA_SECRET
    job = find(prod, "Job", "migrate")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "DATABASE_TLS_CA", "value": "/etc/aws/store-ca/ca.pem"} in job["env"]
    dev = policy.check_store_tls(built_copy("dev"))
    assert "Job/migrate/migrate: DATABASE_URL without DATABASE_TLS_CA" in dev
    assert "Deployment/monitor/monitor: REDIS_URL without REDIS_TLS_CA" in dev


def _without(objects: list[Obj], kind: str, name: str) -> list[Obj]:
    return [o for o in objects if not (o["kind"] == kind and o["metadata"]["name"] == name)]


def _replace(objects: list[Obj], new: Obj) -> list[Obj]:
    return [*_without(objects, new["kind"], new["metadata"]["name"]), new]


def _mutations() -> dict[str, tuple[Callable[[list[Obj]], list[Obj]], str]]:
    def no_outlier(o: list[Obj]) -> list[Obj]:
        dr = find(o, "DestinationRule", "signer")
        return _replace(o, _set(dr, "spec.trafficPolicy", {"tls": {"mode": "ISTIO_MUTUAL"}}))

    def tcp_probe(o: list[Obj]) -> list[Obj]:
        d = find(o, "Deployment", "monitor")
        return _replace(
            o,
            _set(d, "spec.template.spec.containers.0.livenessProbe", {"tcpSocket": {"port": 1}}),
        )

    def probe_on_metrics(o: list[Obj]) -> list[Obj]:
        d = find(o, "Deployment", "webhooks")
        return _replace(
            o, _set(d, "spec.template.spec.containers.0.readinessProbe.grpc.port", 9105)
        )

    def open_signer(o: list[Obj]) -> list[Obj]:
        ap = find(o, "AuthorizationPolicy", "signer-allow")
        principals = ap["spec"]["rules"][0]["from"][0]["source"]["principals"]
        return _replace(
            o,
            _set(
                ap,
                "spec.rules.0.from.0.source.principals",
                [*principals, generate.principal("gateway")],
            ),
        )

    def namespace_allow(o: list[Obj]) -> list[Obj]:
        allow = {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "allow-ns", "namespace": generate.NAMESPACE},
            "spec": {"rules": [{"from": [{"source": {"namespaces": [generate.NAMESPACE]}}]}]},
        }
        return [*o, allow]

    def retry_rotate(o: list[Obj]) -> list[Obj]:
        vs = find(o, "VirtualService", "gateway-public")
        http = copy.deepcopy(vs["spec"]["http"])
        for route in http:
            if route["name"] == "webhookservice-rotatewebhooksecret":
                del route["retries"]  # Istio's default retries apply
        return _replace(o, _set(vs, "spec.http", http))

    def retry_rest_create(o: list[Obj]) -> list[Obj]:
        vs = find(o, "VirtualService", "gateway-public")
        http = copy.deepcopy(vs["spec"]["http"])
        for route in http:
            if route["name"] == "rest-post-v1-webhookEndpoints":
                route["retries"] = {"attempts": 3, "retryOn": "reset"}
        return _replace(o, _set(vs, "spec.http", http))

    def root_user(o: list[Obj]) -> list[Obj]:
        job = find(o, "Job", "migrate")
        return _replace(
            o, _set(job, "spec.template.spec.containers.0.securityContext.runAsUser", 0)
        )

    def no_non_root(o: list[Obj]) -> list[Obj]:
        d = find(o, "Deployment", "processor")
        spec = copy.deepcopy(d["spec"]["template"]["spec"])
        del spec["securityContext"]["runAsNonRoot"]
        del spec["containers"][0]["securityContext"]["runAsNonRoot"]
        return _replace(o, _set(d, "spec.template.spec", spec))

    def writable_root(o: list[Obj]) -> list[Obj]:
        d = find(o, "Deployment", "gateway")
        path = "spec.template.spec.containers.0.securityContext.readOnlyRootFilesystem"
        return _replace(o, _set(d, path, False))

    def secret(o: list[Obj]) -> list[Obj]:
        s = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "dg=="}}
        return [*o, s]

    def short_grace(o: list[Obj]) -> list[Obj]:
        d = find(o, "Deployment", "gateway")
        return _replace(o, _set(d, "spec.template.spec.terminationGracePeriodSeconds", 10))

    def admin_via_public(o: list[Obj]) -> list[Obj]:
        vs = find(o, "VirtualService", "gateway-public")
        admin = find(o, "VirtualService", "gateway-admin")
        http = [*vs["spec"]["http"], admin["spec"]["http"][0]]
        return _replace(o, _set(vs, "spec.http", http))

    def admin_paths_public(o: list[Obj]) -> list[Obj]:
        ap = find(o, "AuthorizationPolicy", "gateway-allow")
        operation = {"ports": ["8080"], "paths": ["/v1/*"]}  # without notPaths
        return _replace(o, _set(ap, "spec.rules.0.to.1.operation", operation))

    def admin_grpc_public(o: list[Obj]) -> list[Obj]:
        ap = find(o, "AuthorizationPolicy", "gateway-allow")
        paths = [*ap["spec"]["rules"][0]["to"][0]["operation"]["paths"]]
        paths.append("/assetwithdrawal.admin.v1.AdminService/ConfirmChange")
        return _replace(o, _set(ap, "spec.rules.0.to.0.operation.paths", paths))

    def no_database_ca(o: list[Obj]) -> list[Obj]:
        d = find(o, "Deployment", "processor")
        env = d["spec"]["template"]["spec"]["containers"][0]["env"]
        kept = [e for e in env if e["name"] != "DATABASE_TLS_CA"]
        return _replace(o, _set(d, "spec.template.spec.containers.0.env", kept))

    def no_redis_ca(o: list[Obj]) -> list[Obj]:
        d = find(o, "Deployment", "gateway")
        env = d["spec"]["template"]["spec"]["containers"][0]["env"]
        kept = [e for e in env if e["name"] != "REDIS_TLS_CA"]
        return _replace(o, _set(d, "spec.template.spec.containers.0.env", kept))

    def writable_ca_mount(o: list[Obj]) -> list[Obj]:
        d = find(o, "Deployment", "monitor")
        mounts = copy.deepcopy(d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"])
        for m in mounts:
            if m["name"] == "store-ca":
                del m["readOnly"]
        return _replace(o, _set(d, "spec.template.spec.containers.0.volumeMounts", mounts))

    def migrate_without_ca_mount(o: list[Obj]) -> list[Obj]:
        job = find(o, "Job", "migrate")
        mounts = job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        kept = [m for m in mounts if m["name"] != "store-ca"]
        return _replace(o, _set(job, "spec.template.spec.containers.0.volumeMounts", kept))

    def ca_from_an_empty_dir(o: list[Obj]) -> list[Obj]:
        d = find(o, "Deployment", "signer")
        volumes = [
            {"name": "store-ca", "emptyDir": {}} if v["name"] == "store-ca" else v
            for v in d["spec"]["template"]["spec"]["volumes"]
        ]
        return _replace(o, _set(d, "spec.template.spec.volumes", volumes))

    def no_account(o: list[Obj]) -> list[Obj]:
        return _without(o, "ServiceAccount", "monitor")

    def no_deny_all(o: list[Obj]) -> list[Obj]:
        return _without(o, "AuthorizationPolicy", "deny-all")

    def no_policy(o: list[Obj]) -> list[Obj]:
        return _without(o, "AuthorizationPolicy", "webhooks-allow")

    return {
        "no outlier detection": (no_outlier, "workloads"),
        "a TCP liveness probe": (tcp_probe, "workloads"),
        "a probe on another port": (probe_on_metrics, "workloads"),
        "no service account": (no_account, "workloads"),
        "no deny-all": (no_deny_all, "workloads"),
        "no authorization policy": (no_policy, "workloads"),
        "the gateway may call the signer": (open_signer, "signer"),
        "a namespace-wide allow": (namespace_allow, "signer"),
        "a non-idempotent method retried": (retry_rotate, "retries"),
        "a non-idempotent REST binding retried": (retry_rest_create, "retries"),
        "a container as root": (root_user, "non_root"),
        "no runAsNonRoot": (no_non_root, "non_root"),
        "a writable root filesystem": (writable_root, "hardening"),
        "a Secret with data": (secret, "secrets"),
        "a grace shorter than the server's": (short_grace, "grace"),
        "the admin API on the public route": (admin_via_public, "ingress"),
        "admin paths open to the public ingress": (admin_paths_public, "ingress"),
        "an admin method open to the public ingress": (admin_grpc_public, "ingress"),
        "a service without DATABASE_TLS_CA": (no_database_ca, "store_tls"),
        "a service without REDIS_TLS_CA": (no_redis_ca, "store_tls"),
        "the store CA mounted writable": (writable_ca_mount, "store_tls"),
        "the migration without the store CA": (migrate_without_ca_mount, "store_tls"),
        "the store CA from an emptyDir": (ca_from_an_empty_dir, "store_tls"),
    }


MUTATIONS = _mutations()


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_policy_checks_fail_on_a_violation(mutation: str, methods: list[Method]) -> None:
    mutate, check = MUTATIONS[mutation]
    objects = mutate(built_copy("prod"))
    graces = {w.name: w.shutdown_grace for w in generate.workloads()}
    checks: dict[str, Callable[[], list[str]]] = {
        "workloads": lambda: policy.check_workloads(objects),
        "signer": lambda: policy.check_sole_caller(objects, "signer", "processor"),
        "retries": lambda: policy.check_retries(objects, methods),
        "non_root": lambda: policy.check_non_root(objects),
        "hardening": lambda: policy.check_hardening(objects),
        "secrets": lambda: policy.check_no_secret_values(objects),
        "grace": lambda: policy.check_termination_grace(objects, graces),
        "ingress": lambda: policy.check_gateway_ingress(
            objects, methods, generate.PUBLIC_INGRESS_SA, generate.ADMIN_INGRESS_SA
        ),
        "store_tls": lambda: policy.check_store_tls(objects),
    }
    assert checks[check]() != []


def test_no_secret_values_anywhere_in_mesh() -> None:
    for path in MESH.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Secret":
                pytest.fail(f"{path}: a Secret belongs outside the repository")


# ---- derived from the code and the contracts


def test_retry_rules_follow_the_idempotency_levels(methods: list[Method]) -> None:
    """Every RPC the gateway and the signer serve has exactly one gRPC route; it retries
    if and only if the contract marks the method safe to repeat."""
    objects = built_copy("prod")
    routes: dict[str, Obj] = {}
    for vs in policy.of_kind(objects, "VirtualService"):
        for route in vs["spec"]["http"]:
            exact = route["match"][0]["uri"].get("exact", "")
            if exact.startswith("/assetwithdrawal."):
                assert exact not in routes, f"{exact} routed twice"
                routes[exact] = route
    served = {m.path: m for m in methods}
    assert set(routes) == set(served)
    for path, route in routes.items():
        retried = route["retries"].get("attempts") != 0
        assert retried == served[path].retry_safe, path
        assert (route["timeout"] == "0s") == served[path].streaming, path


def test_rest_watches_have_routes_of_their_own(methods: list[Method]) -> None:
    """A REST watch stream has no timeout; the unary bindings beside it keep theirs."""
    objects = built_copy("prod")
    routes = [r for vs in policy.of_kind(objects, "VirtualService") for r in vs["spec"]["http"]]
    for m in methods:
        if not m.http_template:
            continue
        first = next(
            r
            for r in routes
            if any(
                policy.route_matches(match, m) and "exact" not in match.get("uri", {})
                for match in r["match"]
            )
        )
        assert (first["timeout"] == "0s") == m.server_streaming, (m.path, first["name"])
        regex = first["match"][0]["uri"].get("regex")
        if m.server_streaming:
            assert regex is not None and re.fullmatch(regex, m.http_sample)


def test_services_and_probes_follow_the_settings() -> None:
    objects = build(MESH / "overlays/dev")
    for w in generate.workloads():
        service = find(objects, "Service", w.name)
        names = [p["name"] for p in service["spec"]["ports"]]
        assert all(re.match(r"^(grpc|http)-", n) for n in names), names
        ports = {p["port"] for p in service["spec"]["ports"]}
        assert w.grpc_port in ports and w.metrics_port in ports
        if w.http_port is not None:
            assert w.http_port in ports
        config = find(objects, "ConfigMap", f"{w.name}-config")["data"]
        prefix = w.name.upper()
        assert config[f"{prefix}_GRPC_PORT"] == str(w.grpc_port)
        assert config[f"{prefix}_METRICS_PORT"] == str(w.metrics_port)
        pod = find(objects, "Deployment", w.name)["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] > math.ceil(w.shutdown_grace)
        assert pod["containers"][0]["livenessProbe"]["grpc"]["port"] == w.grpc_port


def test_scaling() -> None:
    objects = build(MESH / "overlays/prod")
    hpa = find(objects, "HorizontalPodAutoscaler", "gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "gateway"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    scaled = find(objects, "ScaledObject", "processor")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "processor"
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    metric = re.search(r"\(([a-z_]+)\{", query)
    assert metric is not None
    metrics_source = (REPO / "withdrawal_shared/metrics.py").read_text()
    assert f'"{metric.group(1)}"' in metrics_source, "the query reads a metric that exists"
    states = re.search(r'state=~"([^"]+)"', query)
    assert states is not None
    assert set(states.group(1).split("|")) == {State.QUEUED.value, State.VALIDATED.value}
    targets = {
        o["spec"]["scaleTargetRef"]["name"]
        for o in objects
        if o["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")
    }
    assert "signer" not in targets, "the signer stays small and fixed"


def test_readme_lists_every_rpc_with_its_idempotency_level(methods: list[Method]) -> None:
    text = (MESH / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(/[\w.]+/\w+)` \| `?(\w+)`? \|", text, re.MULTILINE))
    expected = {m.path: m.idempotency for m in methods}
    assert rows == expected
    assert {NO_SIDE_EFFECTS, IDEMPOTENT} <= set(rows.values())


def _variables(objects: list[Obj]) -> set[str]:
    names: set[str] = set()
    for obj in objects:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].endswith("-config"):
            names |= set(obj["data"])
        spec = policy.pod_spec(obj)
        if (
            spec is not None
            and obj["metadata"].get("labels", {}).get("app.kubernetes.io/part-of")
            == generate.PART_OF
            and obj["metadata"]["labels"].get("app.kubernetes.io/component")
            in ("service", "migration")
        ):
            for container in policy.containers(spec):
                names |= {e["name"] for e in container.get("env", [])}
    return names


def test_every_variable_set_is_a_documented_setting() -> None:
    from tests.docs.test_docs_true import OPERATIONS, documented_variables

    documented = documented_variables(OPERATIONS.read_text(encoding="utf-8"))
    prefixes = {w.name.upper() for w in generate.workloads()}
    for overlay in OVERLAYS:
        for name in sorted(_variables(built_copy(overlay))):
            head, _, tail = name.partition("_")
            generic = f"<SERVICE>_{tail}" if head in prefixes else name
            assert name in documented or generic in documented, f"{overlay}: {name}"


def test_every_secret_referenced_is_in_the_readme_table() -> None:
    text = (MESH / "README.md").read_text()
    listed = set(re.findall(r"`(aws-[a-z0-9<>-]+)`", text))
    services = {w.name for w in generate.workloads()}
    for overlay in OVERLAYS:
        objects = built_copy(overlay)
        referenced: set[str] = set()
        for obj in objects:
            spec = policy.pod_spec(obj)
            if spec is None:
                continue
            for c in policy.containers(spec):
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        referenced.add(ref["name"])
            referenced |= {
                v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v
            }
        for gw in policy.of_kind(objects, "Gateway"):
            referenced |= {s["tls"]["credentialName"] for s in gw["spec"]["servers"]}
        for name in sorted(referenced):
            generic = re.sub(rf"-({'|'.join(services)})$", "-<service>", name)
            assert name in listed or generic in listed, f"{overlay}: {name} is not documented"
