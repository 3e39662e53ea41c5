"""REST/JSON for the gateway, generated from the protobuf `google.api.http` rules.

- `http_rule`: path templates and which request fields a rule binds;
- `transcoder`: `build_rest_app(bindings)`, the aiohttp application that transcodes;
- `openapi`: `build_openapi(services, ...)`, the OpenAPI document of the same rules.
"""

from svc_gateway.rest.openapi import build_openapi, default_descriptor_set
from svc_gateway.rest.transcoder import (
    RestBinding,
    RestTranscoder,
    StreamInvoker,
    UnaryInvoker,
    build_rest_app,
)

__all__ = [
    "RestBinding",
    "RestTranscoder",
    "StreamInvoker",
    "UnaryInvoker",
    "build_openapi",
    "build_rest_app",
    "default_descriptor_set",
]
