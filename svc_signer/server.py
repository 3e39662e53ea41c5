"""Builds and runs the signer: gRPC (SignerService, health, reflection) on grpc.aio.

Database work and signing run on a bounded thread pool so the event loop never blocks on them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from assetwithdrawal.signer.v1 import signer_pb2, signer_pb2_grpc
from svc_signer import key_states
from svc_signer.core import SignerCore
from svc_signer.keys import KeyBackend, KeyRing, backends_from_env
from svc_signer.keys.ring import add_to_ring
from svc_signer.ledger import Ledger
from svc_signer.safe_owner import SafeOwnerCore
from svc_signer.servicer import Callers, SignerServicer
from svc_signer.settings import ROLE_SAFE_OWNER, SignerSettings
from withdrawal_shared.db.engine import make_engine
from withdrawal_shared.grpc_metrics import MeteredRegistrar
from withdrawal_shared.grpc_registrar import GenericOnlyRegistrar
from withdrawal_shared.runtime import freeze_start_up_objects

log = logging.getLogger(__name__)

SERVICE = signer_pb2.DESCRIPTOR.services_by_name["SignerService"]
SERVICE_NAMES = (SERVICE.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME)


class SignerServer:
    """The running signer; `grpc_port` is known after `start()`.

    It holds one key backend per hot wallet (a `KeyRing`), or with `SIGNER_ROLE=safe_owner`
    exactly one owner key of the treasury Safe (`SafeOwnerCore`). With `backend=None` the
    backends are opened from the settings when starting (and closed on stop); backends passed
    in (one, a sequence of them, or a ring) stay the caller's to close.
    """

    def __init__(
        self,
        settings: SignerSettings,
        backend: KeyBackend | Sequence[KeyBackend] | KeyRing | None = None,
    ) -> None:
        self.settings = settings
        self.grpc_port = 0
        self._keys = None if backend is None else KeyRing.of(backend)
        self._owns_backend = backend is None
        self._engine = make_engine(
            settings.database_url,
            pool_size=settings.db_threads,
            tls=settings.database_tls,
            session_nice=settings.database_session_nice,
        )
        self._executor = ThreadPoolExecutor(settings.db_threads, thread_name_prefix="signer")
        self.ledger = Ledger(self._engine)
        self._health = health.aio.HealthServicer()
        self._grpc: grpc.aio.Server | None = None
        self._probes: grpc.aio.Server | None = None
        self.health_port = 0
        """With TLS on, the plaintext port of the health service alone (else 0)."""
        self.core: SignerCore | None = None

    @property
    def keys(self) -> KeyRing:
        """Every hot wallet's key backend, by address."""
        if self._keys is None:
            raise RuntimeError("the signer has no key backend before start()")
        return self._keys

    @property
    def backend(self) -> KeyBackend:
        """The first hot wallet's key backend (the only one of a single-wallet signer)."""
        return self.keys.first

    async def start(self) -> None:
        if self._keys is None:
            loop = asyncio.get_running_loop()
            environ = self.settings.key_environ()
            backends = await loop.run_in_executor(self._executor, backends_from_env, environ)
            self._keys = KeyRing(backends)
        if self.settings.role != ROLE_SAFE_OWNER:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._hold_keys)
        core_class = SafeOwnerCore if self.settings.role == ROLE_SAFE_OWNER else SignerCore
        self.core = core_class(
            self._keys,
            self.ledger,
            self._executor,
            chain_id=self.settings.chain_id,
            chain=self.settings.chain,
        )
        if self.settings.role != ROLE_SAFE_OWNER and self._owns_backend:
            self.core.key_environ = self.settings.key_environ()
        tls = self.settings.tls
        callers = Callers(
            None
            if tls is None
            else {
                "SignTransaction": self.settings.sign_clients,
                "ListWallets": self.settings.list_clients,
            }
        )
        server = grpc.aio.server()
        # Every call counted and timed, every method served through its service's generic
        # handler (withdrawal_shared.grpc_registrar).
        registrar: Any = MeteredRegistrar(GenericOnlyRegistrar(server))
        signer_pb2_grpc.add_SignerServiceServicer_to_server(
            SignerServicer(self.core, callers), registrar
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, registrar)
        reflection.enable_server_reflection(SERVICE_NAMES, server)
        address = f"{self.settings.grpc_host}:{self.settings.grpc_port}"
        if tls is None:
            self.grpc_port = server.add_insecure_port(address)
        else:
            self.grpc_port = server.add_secure_port(address, tls.server_credentials())
        if self.grpc_port == 0:
            raise OSError(f"cannot listen for gRPC on {address}")
        await server.start()
        self._grpc = server
        if tls is not None:
            # Probes carry no certificate: the health service alone, in plaintext.
            probes = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self._health, probes)
            health_address = f"{self.settings.grpc_host}:{self.settings.health_port}"
            self.health_port = probes.add_insecure_port(health_address)
            if self.health_port == 0:
                raise OSError(f"cannot listen for gRPC health on {health_address}")
            await probes.start()
            self._probes = probes
        for name in (SERVICE.full_name, ""):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "signer serving",
            extra={
                "grpc_port": self.grpc_port,
                "tls": tls is not None,
                "health_port": self.health_port,
                "role": self.settings.role,
                "wallets": list(self._keys.addresses),
                "key_backend": self._keys.first.backend_name,
                "chain_id": self.settings.chain_id,
                "chain": self.settings.chain,
            },
        )

    def _hold_keys(self) -> None:
        """Record the configured hot-wallet keys (ACTIVE when first seen) and open the keys
        CreateWallet made before, its own (`key_states.is_own`; see `svc_signer.key_states`)."""
        keys = self.keys
        with self.ledger.sessions.begin() as session:
            key_states.record_configured(session, self.settings.chain, list(keys))
            created = key_states.created_keys(session, self.settings.chain)
        if not self._owns_backend:
            return
        environ = self.settings.key_environ()
        for record in created:
            if keys.get(record.address) is None and key_states.is_own(environ, record):
                add_to_ring(keys, key_states.open_created(environ, record))

    async def stop(self) -> None:
        """Graceful stop: NOT_SERVING, let in-flight RPCs finish (up to the grace), close."""
        await self._health.enter_graceful_shutdown()
        if self._grpc is not None:
            await self._grpc.stop(self.settings.shutdown_grace_seconds)
        if self._probes is not None:
            await self._probes.stop(None)
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._owns_backend and self._keys is not None:
            self._keys.close()
        self._engine.dispose()

    async def wait(self) -> None:
        if self._grpc is not None:
            await self._grpc.wait_for_termination()


async def serve(settings: SignerSettings, stop: asyncio.Event) -> None:
    server = SignerServer(settings)
    try:
        await server.start()
        freeze_start_up_objects()
        await stop.wait()
    finally:
        await server.stop()
        log.info("signer stopped")
