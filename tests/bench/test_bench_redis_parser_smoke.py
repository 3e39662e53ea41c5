"""bench.redis_parser keeps working (a short run; figures come from the full run), and the
services' Redis clients parse replies with hiredis, which `redis[hiredis]` installs."""

from __future__ import annotations

import json
from pathlib import Path

import redis.asyncio as aioredis
from redis._parsers import _AsyncHiredisParser
from redis.utils import HIREDIS_AVAILABLE

from bench.redis_parser import main


def test_redis_parser_smoke(tmp_path: Path) -> None:
    out = tmp_path / "parser.json"
    assert main(["--rounds", "1", "--calls", "40", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [run["parser"] for run in result["runs"]] == ["python", "hiredis"]
    for run in result["runs"]:
        assert run["script_call_us"] > 0 and run["stream_read_200_us"] > 0
    assert result["stream_read_python_over_hiredis"] > 0


def test_the_services_clients_parse_with_hiredis() -> None:
    assert HIREDIS_AVAILABLE
    # What a connection of the services' clients (`redis.asyncio`, default parser) parses with.
    assert isinstance(aioredis.Connection()._parser, _AsyncHiredisParser)
