"""The invariants the built manifests must keep, as checks that name every violation.

Each check takes the objects of one built overlay (`mesh.kustomize.build`) and returns a list
of problems, empty when the invariant holds; tests run them on every overlay and on mutated
copies, so each can be seen to fail.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from mesh.contracts import Method

Obj = dict[str, Any]
PART_OF = "asset-withdrawal-system"
POD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Pod"})
HEALTH_PORT_NAME = "grpc"


def _name(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


def _namespace(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("namespace", "default"))


def of_kind(objects: Iterable[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o.get("kind") == kind]


def pod_spec(obj: Obj) -> Obj | None:
    if obj.get("kind") == "Pod":
        spec = obj.get("spec")
        return spec if isinstance(spec, dict) else None
    if obj.get("kind") in POD_KINDS:
        template = obj.get("spec", {}).get("template", {})
        spec = template.get("spec")
        return spec if isinstance(spec, dict) else None
    return None


def pod_labels(obj: Obj) -> dict[str, str]:
    labels = obj.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
    return dict(labels)


def services_workloads(objects: Sequence[Obj]) -> list[Obj]:
    """The system's service Deployments (not its migration Job nor dev dependencies)."""
    return [
        d
        for d in of_kind(objects, "Deployment")
        if d.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/part-of") == PART_OF
        and d.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component") == "service"
    ]


def containers(spec: Obj) -> Iterator[Obj]:
    yield from spec.get("initContainers", []) or []
    yield from spec.get("containers", []) or []


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def hosts_of(deployment: Obj, objects: Sequence[Obj]) -> set[str]:
    """The names a Service selecting the Deployment's pods gives it (short, namespaced and
    fully qualified)."""
    labels = pod_labels(deployment)
    names: set[str] = set()
    for svc in of_kind(objects, "Service"):
        if _selects(svc.get("spec", {}).get("selector", {}), labels):
            n, ns = _name(svc), _namespace(svc)
            names |= {n, f"{n}.{ns}", f"{n}.{ns}.svc", f"{n}.{ns}.svc.cluster.local"}
    return names


def _policies_for(deployment: Obj, objects: Sequence[Obj]) -> list[Obj]:
    labels = pod_labels(deployment)
    return [
        p
        for p in of_kind(objects, "AuthorizationPolicy")
        if _namespace(p) == _namespace(deployment)
        and _selects(p.get("spec", {}).get("selector", {}).get("matchLabels", {}), labels)
    ]


def has_deny_all(objects: Sequence[Obj], namespace: str) -> bool:
    """An ALLOW policy without selector nor rules: it allows nothing, so every workload of
    the namespace refuses what no other policy allows."""
    for p in of_kind(objects, "AuthorizationPolicy"):
        spec = p.get("spec") or {}
        if (
            _namespace(p) == namespace
            and not spec.get("selector")
            and not spec.get("rules")
            and spec.get("action", "ALLOW") == "ALLOW"
            and not spec.get("provider")
        ):
            return True
    return False


def check_workloads(objects: Sequence[Obj]) -> list[str]:
    """Every service has a ServiceAccount, a DestinationRule with outlier detection, an
    AuthorizationPolicy under a namespace-wide deny-all, and gRPC health probes."""
    problems: list[str] = []
    workloads = services_workloads(objects)
    if not workloads:
        return ["no service Deployments found"]
    accounts = {(_namespace(a), _name(a)) for a in of_kind(objects, "ServiceAccount")}
    for d in workloads:
        name, ns = _name(d), _namespace(d)
        spec = pod_spec(d) or {}
        account = spec.get("serviceAccountName", "")
        if not account or (ns, account) not in accounts:
            problems.append(f"{name}: no ServiceAccount of its own ({account or 'unset'})")
        hosts = hosts_of(d, objects)
        rules = [
            r for r in of_kind(objects, "DestinationRule") if r.get("spec", {}).get("host") in hosts
        ]
        if not any(
            r.get("spec", {}).get("trafficPolicy", {}).get("outlierDetection") for r in rules
        ):
            problems.append(f"{name}: no DestinationRule with outlierDetection")
        if not _policies_for(d, objects):
            problems.append(f"{name}: no AuthorizationPolicy selects it")
        if not has_deny_all(objects, ns):
            problems.append(f"{name}: its namespace has no deny-all AuthorizationPolicy")
        for c in spec.get("containers", []):
            ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
            health_port = ports.get(HEALTH_PORT_NAME)
            for probe in ("livenessProbe", "readinessProbe"):
                grpc = (c.get(probe) or {}).get("grpc")
                if not grpc:
                    problems.append(f"{name}/{c.get('name')}: {probe} is not a gRPC probe")
                elif grpc.get("port") != health_port:
                    problems.append(
                        f"{name}/{c.get('name')}: {probe} asks port {grpc.get('port')}, "
                        f"not the gRPC server's {health_port}"
                    )
    return problems


def check_non_root(objects: Sequence[Obj]) -> list[str]:
    """No container may run as root: runAsNonRoot on the pod or the container, and no
    runAsUser 0; no privileged container, no privilege escalation."""
    problems: list[str] = []
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        pod = spec.get("securityContext") or {}
        for c in containers(spec):
            ctx = c.get("securityContext") or {}
            where = f"{obj['kind']}/{_name(obj)}/{c.get('name')}"
            non_root = ctx.get("runAsNonRoot", pod.get("runAsNonRoot"))
            user = ctx.get("runAsUser", pod.get("runAsUser"))
            if non_root is not True:
                problems.append(f"{where}: runAsNonRoot is not true")
            if user == 0:
                problems.append(f"{where}: runAsUser is 0 (root)")
            if ctx.get("privileged"):
                problems.append(f"{where}: privileged")
            if ctx.get("allowPrivilegeEscalation", True) is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
    return problems


def check_hardening(objects: Sequence[Obj]) -> list[str]:
    """The services' containers: read-only root filesystem, every capability dropped,
    requests and limits for CPU and memory."""
    problems: list[str] = []
    for d in services_workloads(objects):
        for c in containers(pod_spec(d) or {}):
            where = f"{_name(d)}/{c.get('name')}"
            ctx = c.get("securityContext") or {}
            if ctx.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root filesystem not read-only")
            if "ALL" not in (ctx.get("capabilities") or {}).get("drop", []):
                problems.append(f"{where}: capabilities not dropped (ALL)")
            resources = c.get("resources") or {}
            for part in ("requests", "limits"):
                for res in ("cpu", "memory"):
                    if res not in (resources.get(part) or {}):
                        problems.append(f"{where}: no {res} {part}")
    return problems


def _allowed_callers(policy: Obj, port: str) -> Iterator[tuple[list[str], Obj]]:
    """(principals, operation) of every ALLOW rule that can let a request reach `port`;
    an empty principal list means any source."""
    spec = policy.get("spec") or {}
    if spec.get("action", "ALLOW") != "ALLOW":
        return
    for rule in spec.get("rules") or []:
        operations = [t.get("operation", {}) for t in rule.get("to") or []] or [{}]
        for op in operations:
            ports = op.get("ports")
            if ports and port not in [str(p) for p in ports]:
                continue
            if op.get("notPorts") and port in [str(p) for p in op["notPorts"]]:
                continue
            sources = [f.get("source", {}) for f in rule.get("from") or []]
            if not sources:
                yield [], op
            for source in sources:
                yield list(source.get("principals") or []), op
                if any(k != "principals" for k in source):
                    yield [], op  # a source by namespace, IP or request principal


def check_sole_caller(
    objects: Sequence[Obj], target: str, caller: str, port_name: str = HEALTH_PORT_NAME
) -> list[str]:
    """Only `caller`'s service account may reach `target`'s gRPC port, and only on the
    methods `target` serves."""
    problems: list[str] = []
    deployments = [d for d in services_workloads(objects) if _name(d) == target]
    callers = [d for d in services_workloads(objects) if _name(d) == caller]
    if len(deployments) != 1 or len(callers) != 1:
        return [f"{target} or {caller} is not a single service Deployment"]
    d, c = deployments[0], callers[0]
    ns = _namespace(d)
    expected = (
        f"cluster.local/ns/{_namespace(c)}/sa/{(pod_spec(c) or {}).get('serviceAccountName')}"
    )
    spec = pod_spec(d) or {}
    port = next(
        (
            str(p.get("containerPort"))
            for ctr in spec.get("containers", [])
            for p in ctr.get("ports", [])
            if p.get("name") == port_name
        ),
        "",
    )
    if not has_deny_all(objects, ns):
        problems.append(f"namespace {ns} has no deny-all policy: anyone may call {target}")
    selecting = _policies_for(d, objects) + [
        p
        for p in of_kind(objects, "AuthorizationPolicy")
        if _namespace(p) == ns and not (p.get("spec") or {}).get("selector")
    ]
    allowed_any = False
    for policy in selecting:
        for principals, op in _allowed_callers(policy, port):
            allowed_any = True
            if principals != [expected]:
                problems.append(
                    f"{_name(policy)}: lets {principals or 'any source'} reach {target}:{port}"
                )
            if not op.get("paths"):
                problems.append(f"{_name(policy)}: allows every path of {target}:{port}")
    if not allowed_any:
        problems.append(f"nothing allows {caller} to call {target}")
    return problems


def _route_retries(route: Obj) -> bool:
    """Whether Istio may retry the route: any retry policy but `attempts: 0` (a route
    without one gets Istio's default retries)."""
    retries = route.get("retries")
    return not (isinstance(retries, dict) and retries.get("attempts") == 0)


def route_matches(match: Obj, m: Method) -> bool:
    """Whether an HTTP route match can select a request of the method (gRPC or REST)."""
    uri = match.get("uri") or {}
    verb = (match.get("method") or {}).get("exact")
    if not uri:
        return True
    if "regex" in uri:
        pattern = re.compile(str(uri["regex"]))
        rest = bool(m.http_template) and verb in (None, m.http_verb)
        return bool(pattern.fullmatch(m.path)) or (rest and bool(pattern.fullmatch(m.http_sample)))
    if "exact" in uri:
        return bool(uri["exact"] == m.path)
    prefix = str(uri.get("prefix", ""))
    if m.path.startswith(prefix):
        return True
    if not m.http_template or verb not in (None, m.http_verb):
        return False
    # The REST binding's literal part starts with the prefix, or the prefix stops inside
    # the binding's templated part.
    templated = m.http_prefix != m.http_template
    return m.http_prefix.startswith(prefix) or (templated and prefix.startswith(m.http_prefix))


def _methods_matched(match: Obj, methods: Sequence[Method]) -> list[Method]:
    return [m for m in methods if route_matches(match, m)]


def check_retries(objects: Sequence[Obj], methods: Sequence[Method]) -> list[str]:
    """No VirtualService route retries a method whose idempotency level does not allow a
    repeat (neither NO_SIDE_EFFECTS nor IDEMPOTENT, or client-streaming)."""
    problems: list[str] = []
    for vs in of_kind(objects, "VirtualService"):
        for route in (vs.get("spec") or {}).get("http") or []:
            if not _route_retries(route):
                continue
            matches = route.get("match") or [{}]
            for match in matches:
                for m in _methods_matched(match, methods):
                    if not m.retry_safe:
                        problems.append(
                            f"{_name(vs)}/{route.get('name')}: retries {m.path} ({m.idempotency})"
                        )
    return problems


def check_no_secret_values(objects: Sequence[Obj]) -> list[str]:
    """No Secret carries data: they are created outside the repository."""
    return [
        f"Secret/{_name(s)} carries values"
        for s in of_kind(objects, "Secret")
        if s.get("data") or s.get("stringData")
    ]


def check_termination_grace(objects: Sequence[Obj], graces: dict[str, float]) -> list[str]:
    """Each service's pod waits longer than its own shutdown grace before SIGKILL."""
    problems: list[str] = []
    for d in services_workloads(objects):
        name = _name(d)
        period = (pod_spec(d) or {}).get("terminationGracePeriodSeconds", 30)
        if name in graces and not period > graces[name]:
            problems.append(f"{name}: terminationGracePeriodSeconds {period} <= {graces[name]}")
    return problems


ADMIN_GRPC_PREFIX = "/assetwithdrawal.admin."
ADMIN_REST_PREFIX = "/v1/admin/"


def _covers_admin(path: str) -> bool:
    if path.startswith((ADMIN_GRPC_PREFIX, ADMIN_REST_PREFIX)):
        return True
    if path.endswith("*"):
        stem = path[:-1]
        return ADMIN_REST_PREFIX.startswith(stem) or ADMIN_GRPC_PREFIX.startswith(stem)
    return False


def check_gateway_ingress(
    objects: Sequence[Obj], methods: Sequence[Method], public_sa: str, admin_sa: str
) -> list[str]:
    """Only the ingress gateways reach the gateway's API ports; the admin API only from the
    admin ingress gateway, and only its own route carries it."""
    return _gateway_sources(objects, public_sa, admin_sa) + _admin_routes(objects, methods)


def _gateway_sources(objects: Sequence[Obj], public_sa: str, admin_sa: str) -> list[str]:
    problems: list[str] = []
    gateways = [d for d in services_workloads(objects) if _name(d) == "gateway"]
    if len(gateways) != 1:
        return ["no single gateway Deployment"]
    d = gateways[0]
    spec = pod_spec(d) or {}
    ports = {
        p.get("name"): str(p.get("containerPort"))
        for c in spec.get("containers", [])
        for p in c.get("ports", [])
    }
    for port in (ports.get("grpc", ""), ports.get("http", "")):
        for policy in _policies_for(d, objects):
            for principals, op in _allowed_callers(policy, port):
                if not principals or set(principals) - {public_sa, admin_sa}:
                    who = principals or "any source"
                    problems.append(f"{_name(policy)}: lets {who} reach gateway:{port}")
                    continue
                if admin_sa in principals:
                    continue
                excluded = any(_covers_admin(p) for p in op.get("notPaths") or [])
                problems.extend(
                    f"{_name(policy)}: the public ingress may reach {path} on gateway:{port}"
                    for path in op.get("paths") or ["*"]
                    if _covers_admin(path) and not (excluded and path.endswith("*"))
                )
    return problems


def _admin_routes(objects: Sequence[Obj], methods: Sequence[Method]) -> list[str]:
    problems: list[str] = []
    for vs in of_kind(objects, "VirtualService"):
        vs_spec = vs.get("spec") or {}
        bound = vs_spec.get("gateways") or []
        for route in vs_spec.get("http") or []:
            for match in route.get("match") or [{}]:
                for m in _methods_matched(match, methods):
                    is_admin = m.path.startswith(ADMIN_GRPC_PREFIX)
                    if is_admin and bound != ["admin"]:
                        problems.append(f"{_name(vs)}/{route.get('name')} carries {m.path}")
                    if not is_admin and "admin" in bound:
                        problems.append(f"admin route {_name(vs)} carries {m.path}")
    return problems


STORE_TLS = {"DATABASE_URL": "DATABASE_TLS_CA", "REDIS_URL": "REDIS_TLS_CA"}
"""A store's connection variable, and the setting naming the CA its server is verified by."""


def _variables_of(container: Obj, objects: Sequence[Obj], namespace: str) -> dict[str, Any]:
    """The container's environment: its ConfigMaps' data (`envFrom`), then `env` (a literal
    value, or the `valueFrom` reference), the later winning as in Kubernetes."""
    maps = {(_namespace(m), _name(m)): m.get("data") or {} for m in of_kind(objects, "ConfigMap")}
    found: dict[str, Any] = {}
    for source in container.get("envFrom") or []:
        ref = (source.get("configMapRef") or {}).get("name")
        if ref:
            found |= maps.get((namespace, ref), {})
    for e in container.get("env") or []:
        found[e.get("name")] = e["value"] if "value" in e else e.get("valueFrom")
    return found


def check_store_tls(objects: Sequence[Obj]) -> list[str]:
    """Every container of the system that connects to MySQL or Redis (it has DATABASE_URL or
    REDIS_URL) verifies the server by TLS: DATABASE_TLS_CA (REDIS_TLS_CA) names a file of a
    Secret volume, mounted read-only into that container. For the prod overlay, whose stores
    are outside the cluster; dev's in-cluster stores are plaintext."""
    problems: list[str] = []
    for obj in objects:
        spec = pod_spec(obj)
        labels = obj.get("metadata", {}).get("labels", {})
        if spec is None or labels.get("app.kubernetes.io/part-of") != PART_OF:
            continue
        volumes = {v.get("name"): v for v in spec.get("volumes") or []}
        for c in containers(spec):
            where = f"{obj['kind']}/{_name(obj)}/{c.get('name')}"
            env = _variables_of(c, objects, _namespace(obj))
            for store, setting in STORE_TLS.items():
                if store not in env:
                    continue
                path = env.get(setting)
                if not path:
                    problems.append(f"{where}: {store} without {setting}")
                    continue
                if not isinstance(path, str):
                    problems.append(f"{where}: {setting} is not a literal path")
                    continue
                problems.extend(
                    f"{where}: {setting}={path} {problem}"
                    for problem in _mounted_secret_file(c, volumes, path)
                )
    return problems


def _mounted_secret_file(container: Obj, volumes: dict[str, Obj], path: str) -> list[str]:
    mounts = [
        m
        for m in container.get("volumeMounts") or []
        if path.startswith(str(m.get("mountPath", "")).rstrip("/") + "/")
    ]
    if not mounts:
        return ["is on no volume mount"]
    mount = max(mounts, key=lambda m: len(str(m.get("mountPath", ""))))
    problems: list[str] = []
    if mount.get("readOnly") is not True:
        problems.append(f"is on mount {mount.get('name')}, not read-only")
    secret = (volumes.get(mount.get("name")) or {}).get("secret")
    if not isinstance(secret, dict) or not secret.get("secretName"):
        return [*problems, f"is on volume {mount.get('name')}, not a Secret's"]
    relative = path[len(str(mount["mountPath"]).rstrip("/")) + 1 :]
    items = secret.get("items")
    if items and relative not in {i.get("path") for i in items}:
        problems.append(f"is not among the items of Secret {secret['secretName']}")
    return problems
