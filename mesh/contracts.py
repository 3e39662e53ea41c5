"""What the mesh manifests are generated from: the gRPC methods in the descriptors of gen/.

Each method carries its full path (`/package.Service/Method`), its streaming shape, its
`idempotency_level` option and its `google.api.http` binding (verb and path template), so the
authorization policies, routes and retry rules follow the contracts and cannot drift from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

DESCRIPTORS = "descriptors.binpb"
NO_SIDE_EFFECTS = "NO_SIDE_EFFECTS"
IDEMPOTENT = "IDEMPOTENT"
UNKNOWN = "IDEMPOTENCY_UNKNOWN"
_LEVEL_NAMES = {
    descriptor_pb2.MethodOptions.IDEMPOTENCY_UNKNOWN: UNKNOWN,
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS: NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT: IDEMPOTENT,
}
_VERBS = ("get", "put", "post", "delete", "patch")
_VARIABLE = re.compile(r"\{[^}=]+(?:=([^}]*))?\}")


@dataclass(frozen=True)
class Method:
    service: str
    """The full service name, e.g. `assetwithdrawal.signer.v1.SignerService`."""
    name: str
    idempotency: str
    client_streaming: bool
    server_streaming: bool
    http_verb: str = ""
    """`GET`, `POST`, ... of its `google.api.http` rule; empty without one."""
    http_template: str = ""

    @property
    def path(self) -> str:
        """The gRPC request path, as Envoy and Istio's authorization policies see it."""
        return f"/{self.service}/{self.name}"

    @property
    def retry_safe(self) -> bool:
        """Whether a proxy may send it again: marked NO_SIDE_EFFECTS or IDEMPOTENT, and not
        client-streaming (a proxy cannot replay a request stream)."""
        return self.idempotency in (NO_SIDE_EFFECTS, IDEMPOTENT) and not self.client_streaming

    @property
    def streaming(self) -> bool:
        return self.client_streaming or self.server_streaming

    @property
    def http_prefix(self) -> str:
        """The literal part of the REST path template before its first wildcard, e.g.
        `/v1/withdrawals/` for `/v1/{name=withdrawals/*}:cancel`, or the whole path when it
        has none."""
        expanded = _VARIABLE.sub(lambda m: m.group(1) or "*", self.http_template)
        return expanded.split("*", 1)[0]

    @property
    def http_regex(self) -> str:
        """An RE2 regular expression matching exactly the REST paths of the binding
        (`*` one segment, `**` any rest)."""
        expanded = _VARIABLE.sub(lambda m: m.group(1) or "*", self.http_template)
        parts = re.split(r"(\*\*|\*)", expanded)
        wild = {"*": "[^/]+", "**": ".+"}
        return "^" + "".join(wild.get(p, re.escape(p)) for p in parts) + "$"

    @property
    def http_sample(self) -> str:
        """One REST path of the binding, its wildcards filled in."""
        expanded = _VARIABLE.sub(lambda m: m.group(1) or "*", self.http_template)
        return expanded.replace("**", "x/y").replace("*", "x")


def load_methods(descriptor_set: bytes | None = None) -> list[Method]:
    """Every RPC of the `assetwithdrawal.*` packages in the descriptor set (default: the one
    `make gen` writes to gen/assetwithdrawal/), in file and declaration order."""
    raw = (
        descriptor_set
        if descriptor_set is not None
        else resources.files("assetwithdrawal").joinpath(DESCRIPTORS).read_bytes()
    )
    files = descriptor_pb2.FileDescriptorSet.FromString(raw).file
    methods: list[Method] = []
    for file in files:
        if not file.package.startswith("assetwithdrawal."):
            continue
        for service in file.service:
            for method in service.method:
                options = method.options
                verb, template = "", ""
                if options.HasExtension(annotations_pb2.http):
                    rule = options.Extensions[annotations_pb2.http]
                    for candidate in _VERBS:
                        if getattr(rule, candidate):
                            verb, template = candidate.upper(), getattr(rule, candidate)
                methods.append(
                    Method(
                        service=f"{file.package}.{service.name}",
                        name=method.name,
                        idempotency=_LEVEL_NAMES[options.idempotency_level],
                        client_streaming=method.client_streaming,
                        server_streaming=method.server_streaming,
                        http_verb=verb,
                        http_template=template,
                    )
                )
    return methods
