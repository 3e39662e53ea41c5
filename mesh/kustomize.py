"""A small `kustomize build` for the features mesh/ uses, since no kustomize binary is here.

Supported kustomization fields: `resources` (files and directories holding a
kustomization.yaml), `namespace`, `patches` (each a `path` to a file of one or more partial
objects: a strategic merge patch for built-in kinds, JSON merge patch semantics for custom
resources, `null` deleting a key), `images` (`name`, `newName`, `newTag`) and `replicas`
(`name`, `count`). In a strategic merge patch, a list item with `$patch: delete` removes
the item with the same merge key (a container's env variable by name, a volume by name).
Any other field, a patch that matches nothing, a replica count for a
workload that does not exist and two objects with the same kind, namespace and name are
errors, so a kustomization that real kustomize would read differently fails here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

SUPPORTED = frozenset(
    {"apiVersion", "kind", "resources", "namespace", "patches", "images", "replicas"}
)
CLUSTER_SCOPED = frozenset({"Namespace", "CustomResourceDefinition", "ClusterRole"})
# patchMergeKey of the lists that strategic merge merges item by item (Kubernetes API).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
}
PORT_KEYS = ("containerPort", "port")
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "ReplicaSet"})


class KustomizeError(ValueError):
    """The kustomization uses a feature this builder lacks, or cannot be built."""


def load_documents(path: Path) -> list[Obj]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise KustomizeError(f"{path}: every document needs apiVersion and kind")
    return docs


def is_builtin(obj: Obj) -> bool:
    """Whether the object is a built-in Kubernetes kind (core or a `*.k8s.io` group, or one
    of the unqualified groups such as apps, batch, policy, autoscaling)."""
    api_version = str(obj["apiVersion"])
    if "/" not in api_version:
        return True
    group = api_version.split("/", 1)[0]
    return "." not in group or group.endswith(".k8s.io")


def key(obj: Obj) -> tuple[str, str, str]:
    metadata = obj.get("metadata") or {}
    return (str(obj["kind"]), str(metadata.get("namespace", "")), str(metadata.get("name", "")))


def merge(base: Any, patch: Any, *, strategic: bool, field: str = "") -> Any:
    """Merge `patch` into a copy of `base`: dictionaries key by key (`None` deletes), lists
    replaced, except, with `strategic`, the lists Kubernetes merges by their merge key."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for k, value in patch.items():
            if value is None:
                merged.pop(k, None)
            elif k in merged:
                merged[k] = merge(merged[k], value, strategic=strategic, field=k)
            else:
                merged[k] = copy.deepcopy(value)
        return merged
    if strategic and isinstance(base, list) and isinstance(patch, list):
        merge_key = MERGE_KEYS.get(field)
        if merge_key is None and field == "ports":
            merge_key = next((k for k in PORT_KEYS if all(k in p for p in patch)), None)
        if merge_key is not None and all(isinstance(i, dict) for i in [*base, *patch]):
            return _merge_keyed(base, patch, merge_key)
    return copy.deepcopy(patch)


def _merge_keyed(base: list[Obj], patch: list[Obj], merge_key: str) -> list[Obj]:
    merged = [copy.deepcopy(i) for i in base]
    for item in patch:
        if item.get("$patch") == "delete":  # the strategic merge directive
            merged = [i for i in merged if i.get(merge_key) != item[merge_key]]
            continue
        for index, existing in enumerate(merged):
            if existing.get(merge_key) == item.get(merge_key):
                merged[index] = merge(existing, item, strategic=True)
                break
        else:
            merged.append(copy.deepcopy(item))
    return merged


def _pod_specs(obj: Obj) -> Iterable[Obj]:
    spec = obj.get("spec") or {}
    template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        yield template["spec"]


def _set_image(image: str, rule: Obj) -> str | None:
    name, tag = image, ""
    if "@" in name:
        name = name.split("@", 1)[0]
    elif ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    if name != rule["name"]:
        return None
    new = str(rule.get("newName", name))
    new_tag = str(rule.get("newTag", tag))
    return f"{new}:{new_tag}" if new_tag else new


def build(directory: Path) -> list[Obj]:
    """The objects `kustomize build directory` would print, in resource order."""
    kfile = directory / "kustomization.yaml"
    if not kfile.is_file():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    spec = yaml.safe_load(kfile.read_text(encoding="utf-8")) or {}
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{kfile}: unsupported fields {sorted(unknown)}")
    objects = [o for r in spec.get("resources", []) for o in _resource(directory, r, kfile)]
    for patch_spec in spec.get("patches", []):
        if set(patch_spec) != {"path"}:
            raise KustomizeError(f"{kfile}: only `patches: - path:` is supported")
        for patch in load_documents(directory / patch_spec["path"]):
            _apply_patch(objects, patch, kfile)
    for rule in spec.get("images", []):
        _set_images(objects, rule)
    for rule in spec.get("replicas", []):
        _set_replicas(objects, rule, kfile)
    namespace = spec.get("namespace")
    if namespace:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = namespace
    _check_unique(objects, kfile)
    return objects


def _resource(directory: Path, resource: str, kfile: Path) -> list[Obj]:
    target = directory / resource
    if target.is_dir():
        return build(target)
    if target.is_file():
        return load_documents(target)
    raise KustomizeError(f"{kfile}: resource {resource} does not exist")


def _check_unique(objects: list[Obj], kfile: Path) -> None:
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        if key(obj) in seen:
            raise KustomizeError(f"{kfile}: {'/'.join(key(obj))} is defined twice")
        seen.add(key(obj))


def _apply_patch(objects: list[Obj], patch: Obj, kfile: Path) -> None:
    name = patch.get("metadata", {}).get("name")
    matches = [
        i
        for i, o in enumerate(objects)
        if o["kind"] == patch["kind"]
        and o["apiVersion"] == patch["apiVersion"]
        and o.get("metadata", {}).get("name") == name
    ]
    if not matches:
        raise KustomizeError(f"{kfile}: patch {patch['kind']}/{name} matches nothing")
    for i in matches:
        objects[i] = merge(objects[i], patch, strategic=is_builtin(objects[i]))


def _set_images(objects: list[Obj], rule: Obj) -> None:
    for obj in objects:
        for pod in _pod_specs(obj):
            for container in [*pod.get("containers", []), *pod.get("initContainers", [])]:
                new = _set_image(str(container.get("image", "")), rule)
                if new is not None:
                    container["image"] = new


def _set_replicas(objects: list[Obj], rule: Obj, kfile: Path) -> None:
    targets = [
        o
        for o in objects
        if o["kind"] in WORKLOAD_KINDS and o.get("metadata", {}).get("name") == rule["name"]
    ]
    if not targets:
        raise KustomizeError(f"{kfile}: replicas for {rule['name']}, which does not exist")
    for obj in targets:
        obj.setdefault("spec", {})["replicas"] = int(rule["count"])
