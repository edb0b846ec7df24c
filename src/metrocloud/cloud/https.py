"""HTTPS servers inside cloud processes: a FastAPI application under uvicorn, in the
service's own event loop, presenting the service's certificate from the cluster's PKI."""

from __future__ import annotations

import asyncio
import contextlib

import uvicorn
from fastapi import FastAPI

from metrocloud.cloud.runtime import DataDir

LOCAL_HOSTS = ("127.0.0.1", "localhost")
"""The names in the TLS certificate of every service that answers HTTPS; one on another
address also names that address."""


class HttpsServer:
    """``app`` on ``host:port`` over TLS with identity ``identity_name``'s certificate."""

    def __init__(
        self, app: FastAPI, data: DataDir, identity_name: str, port: int, host: str = "127.0.0.1"
    ) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            ssl_certfile=str(data.identities / f"{identity_name}.pem"),
            ssl_keyfile=str(data.identities / f"{identity_name}.key"),
            ssl_keyfile_password=data.passphrase().decode(),
            log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Future[object] | None = None

    @property
    def started(self) -> bool:
        return self._server.started

    def start(self) -> None:
        """Begin serving in the running loop."""
        self._task = asyncio.ensure_future(self._serve())

    async def _serve(self) -> object:
        await self._server.serve()
        return None

    async def serve_until(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set or the server ends, then shut down."""
        if self._task is None:
            self.start()
        assert self._task is not None
        waiting: asyncio.Future[object] = asyncio.ensure_future(stop.wait())
        pending: set[asyncio.Future[object]] = {self._task, waiting}
        try:
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            await self.close()

    async def close(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
