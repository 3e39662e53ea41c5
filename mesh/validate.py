"""Schema validation without a cluster: built-in kinds against the Kubernetes API schema
(`kubernetes-validate`), Istio kinds against their CRDs' openAPIV3Schema, KEDA's
ScaledObject against the fields this repository uses (no schema of it is available here)."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

Obj = dict[str, Any]
KUBERNETES_VERSION = "1.33.0"
CRD_FILE = "istio-crds.gen.yaml"


def schemas_dir(repo_root: Path) -> Path:
    """Where the shared schemas live: `../shared/schemas` beside the repository."""
    return repo_root.parent / "shared" / "schemas"


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused (`additionalProperties: false`) wherever it
    lists properties and does not preserve unknown fields, as the API server's strict field
    validation does."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def crd_schemas(crd_path: Path) -> dict[tuple[str, str], Obj]:
    """(apiVersion, kind) -> JSON schema of the whole object, for every served version."""
    found: dict[tuple[str, str], Obj] = {}
    for doc in yaml.safe_load_all(crd_path.read_text(encoding="utf-8")):
        if not doc or doc.get("kind") != "CustomResourceDefinition":
            continue
        group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
        for version in doc["spec"]["versions"]:
            if not version.get("served"):
                continue
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            props = schema.setdefault("properties", {})
            if "spec" in props:
                props["spec"] = strict(props["spec"])
            found[(f"{group}/{version['name']}", kind)] = schema
    return found


def validate_istio(obj: Obj, crd_path: Path) -> list[str]:
    schemas = crd_schemas(crd_path)
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    schema = schemas.get((str(obj.get("apiVersion")), str(obj.get("kind"))))
    if schema is None:
        return [f"{where}: no CRD serves {obj.get('apiVersion')} {obj.get('kind')}"]
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{where}: {'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    ]


def validate_kubernetes(obj: Obj) -> list[str]:
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(p) for p in exc.absolute_path)
        return [f"{where}: {path}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{where}: {exc}"]
    return []


SCALED_OBJECT_SCHEMA: Obj = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string", "minLength": 1},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {"type": "object"},
                "advanced": {"type": "object"},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {"type": "object"},
                            # KEDA's trigger metadata is a map of strings.
                            "metadata": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                        },
                        "if": {"properties": {"type": {"const": "prometheus"}}},
                        "then": {
                            "properties": {
                                "metadata": {
                                    "required": ["serverAddress", "query", "threshold"],
                                    "properties": {
                                        "serverAddress": {"pattern": "^https?://"},
                                        "threshold": {"pattern": r"^[0-9]+(\.[0-9]+)?$"},
                                    },
                                }
                            }
                        },
                    },
                },
            },
        },
    },
}


def validate_scaled_object(obj: Obj) -> list[str]:
    """KEDA publishes no schema here: the fields this repository uses, their types, the
    Prometheus trigger's required metadata, and minReplicaCount <= maxReplicaCount."""
    where = f"ScaledObject/{obj.get('metadata', {}).get('name')}"
    validator = jsonschema.Draft7Validator(SCALED_OBJECT_SCHEMA)
    problems = [
        f"{where}: {'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(obj)
    ]
    spec = obj.get("spec") or {}
    low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if isinstance(low, int) and isinstance(high, int) and low > high:
        problems.append(f"{where}: minReplicaCount {low} > maxReplicaCount {high}")
    return problems


def validate(obj: Obj, crd_path: Path) -> list[str]:
    api_version = str(obj.get("apiVersion", ""))
    if api_version.split("/", 1)[0].endswith("istio.io"):
        return validate_istio(obj, crd_path)
    if api_version.startswith("keda.sh/"):
        return validate_scaled_object(obj)
    return validate_kubernetes(obj)


def find_crds(repo_root: Path) -> Path:
    """The Istio CRDs in `../shared/schemas` beside the repository's root (for a git
    worktree, beside the main checkout too; for a clone of a local checkout, beside that
    checkout). Raises FileNotFoundError naming every place
    looked at when neither holds it."""
    roots = [repo_root]
    git = repo_root / ".git"
    if git.is_file():  # a worktree: `gitdir: <main>/.git/worktrees/<name>`
        gitdir = Path(git.read_text(encoding="utf-8").split(":", 1)[1].strip())
        roots.append(gitdir.parent.parent.parent)
    origin = _local_origin(repo_root)
    if origin is not None:  # a clone of a checkout on this machine (CI's fresh clone)
        roots.append(origin)
    candidates = [schemas_dir(r) / CRD_FILE for r in roots]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "the Istio CRD schemas are missing: looked for "
        + " and ".join(str(c) for c in candidates)
        + " (the shared folder beside the repository holds them)"
    )


def _local_origin(repo_root: Path) -> Path | None:
    """The checkout this repository was cloned from, when `origin` is a path on this machine
    (read from `.git/config`)."""
    config = repo_root / ".git" / "config"
    if not config.is_file():
        return None
    section = ""
    for line in config.read_text(encoding="utf-8", errors="replace").splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        elif section == '[remote "origin"]' and stripped.startswith("url"):
            url = stripped.partition("=")[2].strip()
            path = Path(url.removeprefix("file://"))
            return path if path.is_absolute() and path.is_dir() else None
    return None
