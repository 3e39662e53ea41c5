"""A real gateway (gRPC + REST) running in a background thread with its own event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import faulthandler
import io
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from assetwithdrawal.admin.v1 import admin_pb2_grpc
from assetwithdrawal.withdrawal.v1 import withdrawal_pb2_grpc
from svc_gateway.server import GatewayServer
from svc_gateway.settings import GatewaySettings
from withdrawal_shared.db.api_keys import ensure_partner, issue_api_key
from withdrawal_shared.db.operators import Role, create_operator, issue_credential
from withdrawal_shared.scopes import DEFAULT_SCOPES, Scope


@dataclass
class Partner:
    id: str
    api_key: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@dataclass
class OperatorAccount:
    id: str
    credential: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.credential}"),)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"}


class RunningGateway:
    def __init__(self, settings: GatewaySettings) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server = GatewayServer(settings)
        self.run(self.server.start())
        self.grpc_target = f"127.0.0.1:{self.server.grpc_port}"
        self.base_url = f"http://127.0.0.1:{self.server.http_port}"
        self.channel = grpc.insecure_channel(self.grpc_target)
        self.stub = withdrawal_pb2_grpc.WithdrawalServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)

    def run(self, coro: object, timeout: float = 30) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def add_partner(self, partner_id: str, scopes: Iterable[Scope] = DEFAULT_SCOPES) -> Partner:
        with self.server.store.sessions.begin() as session:
            ensure_partner(session, partner_id)
            session.flush()
            key = issue_api_key(session, partner_id, scopes)
        return Partner(partner_id, key)

    def add_operator(self, operator_id: str, *roles: Role) -> OperatorAccount:
        """An operator created directly in the database (no four eyes), with a credential."""
        with self.server.store.sessions.begin() as session:
            create_operator(session, operator_id, roles)
            session.flush()
            _, credential = issue_credential(session, operator_id, created_by="tests")
        return OperatorAccount(operator_id, credential)

    def close(self) -> None:
        self.channel.close()
        try:
            self.run(self.server.stop())
        except concurrent.futures.TimeoutError:
            # Say what the stop waits on: every task of the loop, then every thread's stack.
            tasks = io.StringIO()
            for task in asyncio.all_tasks(self.loop):
                task.print_stack(file=tasks)
            sys.stderr.write(f"gateway stop timed out; asyncio tasks:\n{tasks.getvalue()}")
            sys.stderr.flush()
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            raise
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
