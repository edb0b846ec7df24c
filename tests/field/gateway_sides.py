"""Helpers of the HAN and WAN tests: a gateway fed with real telegrams, and the PKI
identities of administrators, a receiver and a foreign CA, all made at test time.

Imported by the test modules of this folder (pytest puts the folder on ``sys.path``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from lmn_keys import aes_key

from metrocloud.core.clock import index_time
from metrocloud.field.lmn import sensor_telegram
from metrocloud.field.meter import DEFAULT_ORIGIN_INDEX
from metrocloud.field.sensors import Interface, Medium, Security, Sensor, SensorConfig
from metrocloud.field.smgw import Accepted, MeterRecord, SmartMeterGateway
from metrocloud.field.wan import administrator_identity, wan_server_identity
from metrocloud.pki import Identity, IdentityStore, Role

KEY = aes_key("gateway-sides")
START = DEFAULT_ORIGIN_INDEX + 2000

# name: (number, medium, interface, customer)
METERS = {
    "elec": ("20000001", Medium.ELECTRICITY, Interface.WIRELESS, "c-1"),
    "heat": ("20000002", Medium.HEAT, Interface.WIRED, "c-1"),
    "gas": ("20000003", Medium.GAS, Interface.WIRELESS, "c-2"),
}


@dataclass
class FedGateway:
    """A gateway with the meters of :data:`METERS` (AES), fed ``count`` quarter hours of
    real telegrams from ``START`` on; its clock follows the telegrams."""

    count: int = 6
    now: datetime = field(default_factory=lambda: index_time(START - 1))
    gateway: SmartMeterGateway = field(init=False)
    sensors: dict[str, Sensor] = field(init=False)

    def __post_init__(self) -> None:
        self.gateway = SmartMeterGateway("gw-sides", clock=lambda: self.now)
        self.sensors = {}
        for name, (number, medium, interface, customer) in METERS.items():
            sensor = Sensor(
                SensorConfig(
                    number,
                    medium,
                    seed=len(name),
                    key=KEY,
                    interface=interface,
                    start_register=1_000_000 * len(name),
                    origin_index=START - 10,
                )
            )
            self.sensors[name] = sensor
            self.gateway.configure_meter(
                MeterRecord(sensor.meter_id, medium, customer, Security.AES, KEY)
            )
        for n in range(self.count):
            self.feed(START + n, access=n + 1)

    def feed(self, index: int, access: int) -> None:
        """Every meter's telegram of ``index``, received 90 s after it; all accepted."""
        self.now = index_time(index) + timedelta(seconds=90)
        for sensor in self.sensors.values():
            wired = sensor.config.interface is Interface.WIRED
            out = self.gateway.receive(sensor_telegram(sensor, index, access), wired=wired)
            assert out.accepted, out

    def id(self, name: str) -> str:
        return self.sensors[name].meter_id

    def accepted(self, customer: str) -> dict[str, list[Accepted]]:
        return self.gateway.consumer_view(customer)

    def registers(self, customer: str) -> set[int]:
        return {a.reading.register_wh for got in self.accepted(customer).values() for a in got}


@dataclass(frozen=True)
class Parties:
    """Everyone the WAN tests need, from the metrocloud PKI in ``folder`` and a foreign one."""

    folder: Path
    ids: IdentityStore
    server: Identity
    admin: Identity
    other_admin: Identity
    receiver: Identity
    foreign_admin: Identity
    foreign_ids: IdentityStore

    @property
    def root(self) -> Path:
        return self.folder / "pki" / "root.pem"

    def files(self, who: Identity, store: IdentityStore | None = None) -> tuple[Path, Path]:
        store = self.ids if store is None else store
        return store.chain_path(who.common_name), store.directory / f"{who.common_name}.key"


def make_parties(folder: Path, gateway_id: str) -> Parties:
    ids = IdentityStore.open_local(folder)
    foreign = IdentityStore.open_local(folder / "foreign")
    return Parties(
        folder=folder,
        ids=ids,
        server=wan_server_identity(ids, gateway_id),
        admin=administrator_identity(ids, "admin-anna"),
        other_admin=administrator_identity(ids, "admin-revoked"),
        receiver=ids.identity("c-1", Role.RECEIVER),
        foreign_admin=administrator_identity(foreign, "admin-anna"),  # the same name
        foreign_ids=foreign,
    )
