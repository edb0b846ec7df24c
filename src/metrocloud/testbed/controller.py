"""The test controller: an HTTP API over one :class:`~metrocloud.testbed.testbed.Testbed`,
and a Python client for it.

``metrocloud testbed serve`` runs it on 127.0.0.1; its OpenAPI document is at
``/openapi.json``. A scenario establishes the start state (``POST /v1/start``), calls
atomic actions, and reads the outcomes:

| request | action |
| --- | --- |
| ``POST /v1/start`` | a fresh cloud, gateway, meters and customers (the start state) |
| ``POST /v1/stop`` | everything stopped |
| ``GET /v1/state`` | what runs: meters, period, services, URLs |
| ``POST /v1/field/measure`` | the meters send ``quarters`` more readings (default: the rest) |
| ``POST /v1/meters/{meter}/register`` | the meter's register reads ``value`` from now on |
| ``POST /v1/meters/{meter}/key`` | the meter encrypts with ``key`` (hex); ``tell_gateway`` |
| ``POST /v1/meters/{meter}/interrupt`` / ``resume`` | the meter stops / starts sending |
| ``POST /v1/field/inject`` | a crafted frame (hex), or ``replay_of`` a meter's last frame |
| ``POST /v1/bill`` | the gateway seals the period, the cloud bills, every bill is verified |
| ``POST /v1/certificates/{name}/revoke`` | the PKI revokes identity ``name``'s certificate |
| ``POST /v1/updates`` | a software update package (body) to the download manager |
| ``POST /v1/services/{name}/{action}`` | ``stop``, ``start`` or ``kill`` (``kill -9``) a service |
| ``GET /v1/logbook`` | the cloud's logbook entries (``?kind=``) |
| ``GET /v1/flags`` | the measuring system's flags (results a display refused) |
| ``GET /v1/gateway/logs/{audience}`` | the gateway's consumer, administrator or metrological log |
| ``GET /v1/field`` | telegrams sent and received, the gateway's verdicts, the channel's counts |
| ``POST /v1/gateway/wan`` | a request to the gateway's WAN API with ``identity``'s certificate |
| ``GET /v1/software`` | the download manager's identification and installed releases |
| ``POST /v1/attacks/forged-gateway`` | every period sealed under a look-alike gateway certificate |
| ``POST /v1/attacks/altered-upload`` | a transmission with bytes changed after signing |
| ``POST /v1/attacks/manipulate/{service}`` | ``service`` restarted running ``fault`` (an insider) |
| ``POST /v1/attacks/update/{kind}`` | a malicious update, see ``UPDATE_ATTACKS`` |
| ``POST /v1/attacks/publish`` | a message on a bus ``subject`` with ``role``'s credentials |
| ``POST /v1/attacks/logbook/{entry}`` | a logbook entry rewritten in the database file |
| ``POST /v1/logbook/audit`` | an auditor's check of the log against the witnesses' cosigned head |
| ``POST /v1/faults/{fault}`` | ``fault`` injected into ``service`` for ``seconds`` (``disturb``) |
| ``DELETE /v1/faults/{service}`` | the fault in ``service`` ends |
| ``GET /v1/anomaly`` | anomaly detection's state, as the logbook records it |

Errors are JSON ``{"error": ...}`` with 409 (the testbed's state does not allow the
action) or 404 (no such meter, service, identity).

:class:`TestbedClient` speaks this API over any ``httpx`` client: one on the network, or
FastAPI's ``TestClient`` around the app in-process (:meth:`TestbedClient.in_process`), so
scenario tests need no port.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import httpx
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from metrocloud.testbed.testbed import Testbed, TestbedConfig, TestbedError

MediumName = Literal["electricity", "gas", "water", "heat"]
FaultName = Literal["cpu-hog", "memory-leak", "stall", "slow-storage", "flood", "crash"]


class StartRequest(BaseModel):
    meters: int = Field(2, ge=1, le=100)
    days: int = Field(1, ge=1, le=31)
    tariff: Literal["taf1", "taf2", "taf3", "taf4"] = "taf1"
    seed: int = 2026
    channel: Literal["ideal", "realistic"] = "ideal"
    crl_refresh_s: float = Field(2.0, gt=0, le=300)
    media: list[MediumName] = Field(
        default_factory=lambda: list[MediumName](["electricity"]), min_length=1, max_length=4
    )
    faults: bool = False
    anomaly_training_s: float | None = Field(None, gt=0, le=3600)
    anomaly_interval_s: float | None = Field(None, gt=0, le=60)
    test_meters: int = Field(0, ge=0, le=100)


class MeasureRequest(BaseModel):
    quarters: int | None = Field(None, ge=0)


class RegisterRequest(BaseModel):
    value: int = Field(ge=0)


class KeyRequest(BaseModel):
    key: str = Field(pattern=r"^[0-9a-fA-F]{32}$")
    tell_gateway: bool = False


class MeterRequest(BaseModel):
    meter: str


class FaultRequest(BaseModel):
    fault: str = Field("", max_length=200)


class FaultInjectRequest(BaseModel):
    service: str | None = Field(None, max_length=64)
    seconds: float = Field(60.0, gt=0, le=3600)
    rate: float = Field(200.0, gt=0, le=5000)


class PublishRequest(BaseModel):
    role: str
    subject: str = Field(min_length=1, max_length=255)
    payload: str = Field("", pattern=r"^([0-9a-fA-F]{2})*$")


class WanRequest(BaseModel):
    identity: str = Field(min_length=1, max_length=64)
    method: Literal["GET", "PUT", "DELETE"] = "GET"
    path: str = Field(pattern=r"^/[A-Za-z0-9/_.-]*$", max_length=200)
    body: dict[str, Any] | None = None


class InjectRequest(BaseModel):
    frame: str | None = Field(None, pattern=r"^([0-9a-fA-F]{2})+$")
    replay_of: str | None = None


def create_controller_app(testbed: Testbed) -> FastAPI:
    app = FastAPI(title="metrocloud test controller", version="1")

    @app.exception_handler(TestbedError)
    async def conflict(request: Request, exc: TestbedError) -> JSONResponse:
        missing = str(exc).startswith("no ")
        return JSONResponse({"error": str(exc)}, status_code=404 if missing else 409)

    # Every action runs on one thread of its own: the testbed blocks, and OpenFHE (with its
    # OpenMP threads) must not be driven from a different thread each time, which slows
    # encryption down by orders of magnitude.
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="testbed")

    async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(worker, functools.partial(fn, *args, **kwargs))

    @app.post("/v1/start")
    async def start(body: StartRequest) -> dict[str, Any]:
        config = TestbedConfig(**{**body.model_dump(), "media": tuple(body.media)})
        try:
            found: dict[str, Any] = await call(testbed.start, config)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return found

    @app.post("/v1/stop")
    async def stop() -> dict[str, Any]:
        await call(testbed.stop)
        return testbed.state()

    @app.get("/v1/state")
    async def state() -> dict[str, Any]:
        return testbed.state()

    @app.post("/v1/field/measure")
    async def measure(body: MeasureRequest) -> dict[str, Any]:
        found: dict[str, Any] = await call(testbed.measure, body.quarters)
        return found

    @app.get("/v1/field")
    async def field() -> dict[str, Any]:
        found: dict[str, Any] = await call(testbed.field)
        return found

    @app.post("/v1/meters/{meter}/register")
    async def register(meter: str, body: RegisterRequest) -> dict[str, Any]:
        found: dict[str, Any] = await call(testbed.set_register, meter, body.value)
        return found

    @app.post("/v1/meters/{meter}/key")
    async def key(meter: str, body: KeyRequest) -> dict[str, Any]:
        found: dict[str, Any] = await call(
            testbed.change_meter_key,
            meter,
            bytes.fromhex(body.key),
            tell_gateway=body.tell_gateway,
        )
        return found

    @app.post("/v1/meters/{meter}/interrupt")
    async def interrupt(meter: str) -> dict[str, Any]:
        found: dict[str, Any] = await call(testbed.interrupt_meter, meter)
        return found

    @app.post("/v1/meters/{meter}/resume")
    async def resume(meter: str) -> dict[str, Any]:
        found: dict[str, Any] = await call(testbed.interrupt_meter, meter, resume=True)
        return found

    @app.post("/v1/field/inject")
    async def inject(body: InjectRequest) -> dict[str, Any]:
        if (body.frame is None) == (body.replay_of is None):
            raise HTTPException(422, "give either frame (hex) or replay_of (a meter)")
        frame = (
            bytes.fromhex(body.frame)
            if body.frame is not None
            else await call(testbed.captured, str(body.replay_of))
        )
        found: dict[str, Any] = await call(testbed.inject, frame)
        return found

    @app.post("/v1/bill")
    async def bill(timeout_s: float = 120.0) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await call(testbed.bill, timeout_s)
        return found

    @app.post("/v1/checks")
    async def check() -> dict[str, Any]:
        found: dict[str, Any] = await call(testbed.check)
        return found

    @app.post("/v1/certificates/{name}/revoke")
    async def revoke(name: str) -> dict[str, Any]:
        try:
            found: dict[str, Any] = await call(testbed.revoke, name)
        except FileNotFoundError:
            raise TestbedError(f"no identity {name}") from None
        return found

    @app.post("/v1/updates")
    async def update(request: Request) -> dict[str, Any]:
        found: dict[str, Any] = await call(testbed.push_update, await request.body())
        return found

    @app.post("/v1/services/{name}/{action}")
    async def service(name: str, action: Literal["stop", "start", "kill"]) -> dict[str, Any]:
        found: dict[str, Any] = await call(testbed.service, name, action)
        return found

    @app.post("/v1/gateway/wan")
    async def gateway_wan(body: WanRequest) -> dict[str, Any]:
        found: dict[str, Any] = await call(
            testbed.gateway_wan, body.identity, body.method, body.path, body.body
        )
        return found

    @app.get("/v1/software")
    async def software() -> dict[str, Any]:
        found: dict[str, Any] = await call(testbed.software)
        return found

    @app.post("/v1/attacks/forged-gateway")
    async def forged_gateway() -> dict[str, Any]:
        found: dict[str, Any] = await call(testbed.forge_gateway)
        return found

    @app.post("/v1/attacks/altered-upload")
    async def altered_upload(body: MeterRequest) -> dict[str, Any]:
        found: dict[str, Any] = await call(testbed.alter_upload, body.meter)
        return found

    @app.post("/v1/attacks/manipulate/{service}")
    async def manipulate(service: str, body: FaultRequest) -> dict[str, Any]:
        try:
            found: dict[str, Any] = await call(testbed.manipulate, service, body.fault)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return found

    @app.post("/v1/faults/{fault}")
    async def inject_fault(fault: FaultName, body: FaultInjectRequest) -> dict[str, Any]:
        try:
            found: dict[str, Any] = await call(
                testbed.inject_fault, fault, body.service, body.seconds, body.rate
            )
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return found

    @app.delete("/v1/faults/{service}")
    async def clear_fault(service: str) -> dict[str, Any]:
        found: dict[str, Any] = await call(testbed.clear_fault, service)
        return found

    @app.get("/v1/anomaly")
    async def anomaly() -> dict[str, Any]:
        found: dict[str, Any] = await call(testbed.anomaly)
        return found

    @app.post("/v1/attacks/update/{kind}")
    async def update_attack(kind: str) -> dict[str, Any]:
        found: dict[str, Any] = await call(testbed.update_attack, kind)
        return found

    @app.post("/v1/attacks/publish")
    async def publish(body: PublishRequest) -> dict[str, Any]:
        payload = bytes.fromhex(body.payload)
        found: dict[str, Any] = await call(testbed.publish_as, body.role, body.subject, payload)
        return found

    @app.post("/v1/attacks/logbook/{entry}")
    async def alter_logbook(entry: int) -> dict[str, Any]:
        found: dict[str, Any] = await call(testbed.alter_logbook, entry)
        return found

    @app.post("/v1/logbook/audit")
    async def audit(wait_s: float = 0.0) -> dict[str, Any]:
        found: dict[str, Any] = await call(testbed.audit_logbook, min(wait_s, 120.0))
        return found

    @app.get("/v1/logbook")
    async def logbook(kind: str | None = None) -> list[dict[str, Any]]:
        try:
            found: list[dict[str, Any]] = await call(testbed.logbook, kind)
        except ValueError:
            raise HTTPException(422, f"no event kind {kind!r}") from None
        return found

    @app.get("/v1/flags")
    async def flags() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await call(testbed.flags)
        return found

    @app.get("/v1/gateway/logs/{audience}")
    async def gateway_log(
        audience: Literal["consumer", "administrator", "metrological"],
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await call(testbed.gateway_log, audience)
        return found

    return app


class TestbedClient:
    """The test controller's API as Python calls; raises ``httpx.HTTPStatusError`` with the
    controller's error on a refused action."""

    __test__ = False  # not a pytest class

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    @classmethod
    def connect(cls, url: str, timeout_s: float = 600.0) -> TestbedClient:
        return cls(httpx.Client(base_url=url, timeout=timeout_s, trust_env=False))

    @classmethod
    def in_process(cls, root: Path) -> tuple[TestbedClient, Testbed]:
        """A controller app around a new testbed in ``root``, called without a socket."""
        from fastapi.testclient import TestClient

        testbed = Testbed(root)
        return cls(TestClient(create_controller_app(testbed))), testbed

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()

    def start(self, **config: Any) -> dict[str, Any]:
        found: dict[str, Any] = self._call("POST", "/v1/start", json=config)
        return found

    def stop(self) -> None:
        self._call("POST", "/v1/stop")

    def state(self) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", "/v1/state")
        return found

    def measure(self, quarters: int | None = None) -> dict[str, Any]:
        found: dict[str, Any] = self._call("POST", "/v1/field/measure", json={"quarters": quarters})
        return found

    def field(self) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", "/v1/field")
        return found

    def set_register(self, meter: str, value: int) -> None:
        self._call("POST", f"/v1/meters/{meter}/register", json={"value": value})

    def change_key(self, meter: str, key: bytes, *, tell_gateway: bool = False) -> None:
        body = {"key": key.hex(), "tell_gateway": tell_gateway}
        self._call("POST", f"/v1/meters/{meter}/key", json=body)

    def interrupt(self, meter: str) -> None:
        self._call("POST", f"/v1/meters/{meter}/interrupt")

    def resume(self, meter: str) -> None:
        self._call("POST", f"/v1/meters/{meter}/resume")

    def inject(self, frame: bytes | None = None, *, replay_of: str | None = None) -> None:
        body = {"frame": None if frame is None else frame.hex(), "replay_of": replay_of}
        self._call("POST", "/v1/field/inject", json=body)

    def bill(self, timeout_s: float = 120.0) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call(
            "POST", "/v1/bill", params={"timeout_s": timeout_s}
        )
        return found

    def revoke(self, name: str) -> None:
        self._call("POST", f"/v1/certificates/{name}/revoke")

    def push_update(self, package: bytes) -> dict[str, Any]:
        found: dict[str, Any] = self._call("POST", "/v1/updates", content=package)
        return found

    def service(self, name: str, action: Literal["stop", "start", "kill"]) -> None:
        self._call("POST", f"/v1/services/{name}/{action}")

    def logbook(self, kind: str | None = None) -> list[dict[str, Any]]:
        params = {} if kind is None else {"kind": kind}
        found: list[dict[str, Any]] = self._call("GET", "/v1/logbook", params=params)
        return found

    def flags(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call("GET", "/v1/flags")
        return found

    def gateway_log(self, audience: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call("GET", f"/v1/gateway/logs/{audience}")
        return found

    def software(self) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", "/v1/software")
        return found

    def forge_gateway(self) -> dict[str, Any]:
        found: dict[str, Any] = self._call("POST", "/v1/attacks/forged-gateway")
        return found

    def alter_upload(self, meter: str) -> dict[str, Any]:
        found: dict[str, Any] = self._call(
            "POST", "/v1/attacks/altered-upload", json={"meter": meter}
        )
        return found

    def manipulate(self, service: str, fault: str) -> dict[str, Any]:
        found: dict[str, Any] = self._call(
            "POST", f"/v1/attacks/manipulate/{service}", json={"fault": fault}
        )
        return found

    def update_attack(self, kind: str) -> dict[str, Any]:
        found: dict[str, Any] = self._call("POST", f"/v1/attacks/update/{kind}")
        return found

    def publish_as(self, role: str, subject: str, payload: bytes = b"") -> dict[str, Any]:
        body = {"role": role, "subject": subject, "payload": payload.hex()}
        found: dict[str, Any] = self._call("POST", "/v1/attacks/publish", json=body)
        return found

    def alter_logbook(self, entry: int) -> dict[str, Any]:
        found: dict[str, Any] = self._call("POST", f"/v1/attacks/logbook/{entry}")
        return found

    def audit_logbook(self, wait_s: float = 0.0) -> dict[str, Any]:
        found: dict[str, Any] = self._call("POST", "/v1/logbook/audit", params={"wait_s": wait_s})
        return found

    def gateway_wan(
        self, identity: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        request = {"identity": identity, "method": method, "path": path, "body": body}
        found: dict[str, Any] = self._call("POST", "/v1/gateway/wan", json=request)
        return found

    def inject_fault(
        self, fault: str, service: str | None = None, seconds: float = 60.0, rate: float = 200.0
    ) -> dict[str, Any]:
        body = {"service": service, "seconds": seconds, "rate": rate}
        found: dict[str, Any] = self._call("POST", f"/v1/faults/{fault}", json=body)
        return found

    def clear_fault(self, service: str) -> dict[str, Any]:
        found: dict[str, Any] = self._call("DELETE", f"/v1/faults/{service}")
        return found

    def anomaly(self) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", "/v1/anomaly")
        return found

    def check(self) -> dict[str, Any]:
        """The authority's functionality check of the period billed last."""
        found: dict[str, Any] = self._call("POST", "/v1/checks")
        return found
