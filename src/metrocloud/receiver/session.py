"""The customer's display at work: open the key folder, register keys once, pull and check.

:class:`CustomerDisplay` is what ``metrocloud display`` runs. It opens the key folder with
the passphrase (creating the FHE keys the first time), connects to the cloud's bus with the
receivers' TLS credentials, signs every request with the customer's own certificate,
registers the public and evaluation keys once, and turns every result into a
:class:`~metrocloud.receiver.statement.Statement`: the duplicate-result check, then the
recomputation from the gateway's signed readings. A result already checked is not checked
again unless it changed. Every failure a customer can act on is a :class:`DisplayError`
with a plain message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from nats.aio.client import Client
from nats.errors import Error as NatsError

from metrocloud.bus.connect import BusConnectError, connect, tls_credentials
from metrocloud.core.clock import BillingPeriod
from metrocloud.core.errors import ConfigurationError, Rejected
from metrocloud.fhe.context import CustomerKeyPair
from metrocloud.pki import Identity, Role, TrustStore
from metrocloud.pki.client import CRL_NAMES, PkiClient, PkiUnreachable
from metrocloud.receiver.customer import Receiver
from metrocloud.receiver.keyfolder import DisplayError, Enrolment, KeyFolder
from metrocloud.receiver.recompute import Recomputation, recompute
from metrocloud.receiver.statement import Statement
from metrocloud.receiver.verify import Verdict, check_result
from metrocloud.receiver.web import create_app
from metrocloud.tariffs import TariffProgram

CONNECT_TIMEOUT_S = 10.0
MAX_TRANSMISSIONS = 31 * 96
"""A period has no more transmissions than quarter hours (31 days at most)."""


def check_validity(cert: x509.Certificate, what: str, now: datetime | None = None) -> None:
    """``DisplayError`` when ``cert`` is expired or not valid yet."""
    now = now or datetime.now(timezone.utc)
    if now > cert.not_valid_after_utc:
        raise DisplayError(
            f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: ask your "
            "operator for a new one (the cloud refuses requests signed with it)"
        )
    if now < cert.not_valid_before_utc:
        raise DisplayError(
            f"{what} is valid only from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC: "
            "check this computer's clock"
        )


@dataclass
class CustomerDisplay:
    folder: KeyFolder
    enrolment: Enrolment
    receiver: Receiver
    contracts: dict[str, TariffProgram]
    passphrase: bytes = field(repr=False)
    statements: dict[tuple[str, str], Statement] = field(default_factory=dict)
    seen: dict[tuple[str, str], str] = field(default_factory=dict)
    """(meter, period) -> digest of the result its statement was made from."""

    @classmethod
    def open(
        cls,
        folder: KeyFolder,
        passphrase: bytes,
        *,
        on_keygen: Callable[[], None] | None = None,
        at: datetime | None = None,
    ) -> CustomerDisplay:
        """Open the key folder; the FHE keys are made (and sealed) the first time. The
        customer's certificate must be valid ``at`` (now by default)."""
        enrolment = folder.enrolment()
        contracts = {m.meter_id: m.program() for m in enrolment.meters}
        key = folder.identity_key(passphrase)  # a wrong passphrase shows here first
        try:
            chain = folder.identity_chain()
            trust = TrustStore.from_directory(folder.trust_dir)
        except (OSError, ValueError) as exc:
            raise DisplayError(f"the key folder {folder.root} is incomplete: {exc}") from None
        check_validity(chain[0], "your customer certificate", at)
        identity = Identity(enrolment.customer_id, Role.RECEIVER, key, chain[0], tuple(chain[1:]))
        if folder.has_keys:
            keys = folder.load_keys(passphrase)
        else:
            if on_keygen:
                on_keygen()
            keys = folder.create_keys(list(contracts.values()), passphrase)
        receiver = Receiver(enrolment.customer_id, identity, keys, trust)
        return cls(folder, enrolment, receiver, contracts, passphrase)

    @property
    def keys(self) -> CustomerKeyPair:
        return self.receiver.keys

    @property
    def customer_id(self) -> str:
        return self.enrolment.customer_id

    async def connect(self) -> Client:
        """A bus connection as a receiver; ``DisplayError`` when the cloud cannot be reached."""
        bus_pem = self.folder.root / "bus.pem"
        check_validity(
            x509.load_pem_x509_certificates(bus_pem.read_bytes())[0], "the bus certificate"
        )
        try:
            credentials = tls_credentials(
                "receiver",
                ca_file=self.folder.trust_dir / "root.pem",
                cert_file=bus_pem,
                key_file=self.folder.root / "bus.key",
                password=self.passphrase,
            )
            return await connect(
                self.enrolment.cloud,
                credentials,
                name=f"display-{self.customer_id}",
                role="receiver",
                first_connect_timeout_s=CONNECT_TIMEOUT_S,
                max_reconnect_attempts=2,
            )
        except ConfigurationError as exc:
            raise DisplayError(
                f"the bus credentials in {self.folder.root} are unusable: {exc}"
            ) from None
        except BusConnectError as exc:
            raise DisplayError(
                f"cannot reach the cloud at {self.enrolment.cloud}: {exc}. Is it running, "
                f"and is the address in {self.folder.enrolment_file} right?"
            ) from None

    async def register_once(self, nc: Client) -> bool:
        """Hand the public and evaluation keys to the cloud unless already done (True if
        sent now)."""
        record = self.folder.registered
        if record is not None and record.get("key_tag") == self.keys.key_tag:
            return False
        blob = self.folder.evaluation_keys()
        await self.receiver.register(nc, blob)
        self.folder.mark_registered(self.keys.key_tag, hashlib.sha256(blob).hexdigest())
        return True

    def renew_crls(self) -> int:
        """Fetch the current CRLs from the PKI service into the trust store and the key
        folder (each checked: signed by its CA, not older than the one held); how many
        were new. Without an answer the CRLs held stay (a result whose CRL has expired
        then fails with that reason)."""
        if not self.enrolment.pki:
            return 0
        trust, new = self.receiver.trust, 0
        try:
            with PkiClient.connect(
                self.enrolment.pki, tls_trust=self.folder.trust_dir / "root.pem"
            ) as client:
                for name in CRL_NAMES:
                    crl = client.crl(name)
                    if trust.update_crl(crl):
                        self.folder.save_crl(name, crl.public_bytes(Encoding.DER))
                        new += 1
        except (PkiUnreachable, Rejected):
            return new
        return new

    async def refresh(self, nc: Client) -> list[Statement]:
        """Renew the CRLs, then pull every period of every meter and check what is new or
        changed."""
        await asyncio.to_thread(self.renew_crls)
        try:
            for meter_id, contract in self.contracts.items():
                for period in await self.receiver.fetch_periods(nc, meter_id):
                    await self.update(nc, meter_id, period, contract)
        except PermissionError as exc:
            raise DisplayError(f"the cloud refused: {exc}") from None
        except (NatsError, TimeoutError) as exc:
            raise DisplayError(
                f"the cloud did not answer ({type(exc).__name__}): try again"
            ) from None
        return self.current()

    def current(self) -> list[Statement]:
        """The statements held, by meter and period."""
        return [
            self.statements[k]
            for k in sorted(
                self.statements, key=lambda k: (k[0], BillingPeriod.from_id(k[1]).start)
            )
        ]

    async def update(
        self, nc: Client, meter_id: str, period: BillingPeriod, contract: TariffProgram
    ) -> Statement:
        key = (meter_id, period.period_id)
        raw = await self.receiver.fetch(nc, meter_id, period)
        digest = hashlib.sha256(raw or b"").hexdigest()
        if key in self.statements and self.seen.get(key) == digest:
            return self.statements[key]
        verdict = (
            None
            if raw is None
            else check_result(
                raw,
                self.keys,
                self.receiver.trust,
                meter_id=meter_id,
                period=period,
                contract=contract,
            )
        )
        recomputation = await self.recompute(nc, meter_id, period, contract, verdict)
        statement = Statement(meter_id, period, contract, verdict, recomputation)
        if verdict is not None:
            await self.receiver.send_report(nc, verdict_with(statement, verdict))
        self.statements[key] = statement
        self.seen[key] = digest
        return statement

    async def recompute(
        self,
        nc: Client,
        meter_id: str,
        period: BillingPeriod,
        contract: TariffProgram,
        verdict: Verdict | None,
    ) -> Recomputation:
        """Recompute from the transmissions the result says the period had (a result
        that could not even be read names none)."""
        result = verdict.result if verdict is not None else None
        if result is None or not 0 < result.transmissions <= MAX_TRANSMISSIONS:
            return Recomputation("not-run", "no readable result to recompute")
        count = result.transmissions
        transmissions = []
        for seq in range(count):
            tx = await self.receiver.fetch_transmission(nc, meter_id, period, seq)
            if tx is None:
                return Recomputation("failed", f"the cloud has no transmission {seq} of the period")
            transmissions.append(tx)
        return recompute(
            transmissions,
            self.keys,
            self.receiver.trust,
            meter_id=meter_id,
            customer_id=self.customer_id,
            period=period,
            contract=contract,
            cloud=verdict.registers if verdict is not None and verdict.verified else None,
        )


def verdict_with(statement: Statement, verdict: Verdict) -> Verdict:
    """The verdict the display reports to the cloud: a mismatch found by recomputing
    counts as a failed verification."""
    if not verdict.verified or statement.recomputation.matches:
        return verdict
    return Verdict(verdict.meter_id, verdict.period_id, False, statement.reason)


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling: :func:`serve` stops it, then
    closes the bus connection, instead of uvicorn raising Ctrl-C again in the loop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(
    display: CustomerDisplay,
    port: int,
    *,
    on_ready: Callable[[list[Statement]], None] | None = None,
    should_exit: Callable[[], bool] | None = None,
) -> None:
    """Connect, register the keys once, pull every result, and serve the page on
    ``127.0.0.1:port`` until Ctrl-C (or SIGTERM, or ``should_exit`` says so)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    in_main = threading.current_thread() is threading.main_thread()
    nc = await display.connect()
    try:
        if in_main:
            for sig in signals:
                loop.add_signal_handler(sig, stop.set)
        await display.register_once(nc)
        statements = await display.refresh(nc)
        app = create_app(display.customer_id, display.current, lambda: display.refresh(nc))
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
        server = _Server(config)
        task = asyncio.ensure_future(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if on_ready and server.started:
            on_ready(statements)
        while not task.done():
            if stop.is_set() or (should_exit is not None and should_exit()):
                server.should_exit = True
            await asyncio.sleep(0.1)
        await task
    finally:
        if in_main:
            for sig in signals:
                loop.remove_signal_handler(sig)
        try:
            await nc.drain()
        except NatsError:  # the cloud went away meanwhile
            await nc.close()
