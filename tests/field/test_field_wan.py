"""The gateway's WAN side over real HTTPS with client certificates on 127.0.0.1: what an
administrator changes (and where the logs say so), who is refused, bad input, and that the
administrator never sees a reading."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from gateway_sides import KEY, FedGateway, Parties, make_parties
from lmn_keys import PUBLIC_DER, aes_key

from metrocloud.field.han import ConsumerAccounts
from metrocloud.field.interfaces import GatewayInterfaces, TlsFiles, serve_gateway
from metrocloud.field.sensors import Medium, Security
from metrocloud.field.smgw import AUDIENCES, MeterRecord, TariffProfile
from metrocloud.field.wan import administrator_client, create_wan_app
from metrocloud.pki import Identity, IdentityStore

NEW_METER = "MCL-30000001"
NEW_KEY = aes_key("wan-new-meter")
TAF1 = {"price_mct_per_kwh": 31_000}


@pytest.fixture(scope="module")
def parties(tmp_path_factory: pytest.TempPathFactory) -> Parties:
    return make_parties(tmp_path_factory.mktemp("wan-pki"), "gw-sides")


@dataclass
class Wan:
    """A fed gateway whose HAN and WAN sides are served, and the parties that call them."""

    fed: FedGateway
    served: GatewayInterfaces
    parties: Parties

    @property
    def gateway(self) -> Any:
        return self.fed.gateway

    def client(self, who: Identity | None = None, store: IdentityStore | None = None) -> Any:
        """An HTTPS client presenting ``who``'s certificate (None: no certificate)."""
        if who is None:
            context = ssl.create_default_context(cafile=str(self.parties.root))
            return httpx.Client(base_url=self.served.wan_url, verify=context, trust_env=False)
        cert, key = self.parties.files(who, store)
        return administrator_client(
            self.served.wan_url, ca_file=self.parties.root, cert_file=cert, key_file=key
        )

    def admin(self) -> httpx.Client:
        return self.client(self.parties.admin)  # type: ignore[no-any-return]

    def log_lengths(self) -> dict[str, int]:
        return {a: len(self.gateway.logs[a].entries) for a in AUDIENCES}


@pytest.fixture
def wan(parties: Parties) -> Iterator[Wan]:
    fed = FedGateway()
    tls = TlsFiles.in_folder(parties.ids.directory, parties.server.common_name)
    assert parties.ids.pki is not None
    with serve_gateway(fed.gateway, trust=parties.ids.pki.trust_store, wan_tls=tls) as served:
        yield Wan(fed, served, parties)


def entries(wan: Wan, audience: str, kind: str, since: dict[str, int] | None = None) -> list[Any]:
    start = 0 if since is None else since[audience]
    return [e for e in wan.gateway.logs[audience].entries[start:] if e.kind == kind]


def refusal(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["reason"], body["detail"]


# -- what the administrator does --------------------------------------------------------------
def test_every_change_is_in_the_administrator_and_metrological_logs(wan: Wan) -> None:
    lengths = wan.log_lengths()
    with wan.admin() as admin:
        assert admin.get("/").json() == {"gateway": "gw-sides", "administrator": "admin-anna"}
        meter = {"medium": "electricity", "customer": "c-9", "security": "aes-128"}
        added = admin.put(f"/meters/{NEW_METER}", json={**meter, "key": KEY.hex()})
        assert added.status_code == 201, added.text
        assert added.json() == {
            "meter_id": NEW_METER, "medium": "electricity", "unit": "Wh", "customer": "c-9",
            "security": "aes-128", "key_set": True, "tariff": None,
        }  # fmt: skip
        replaced = admin.put(f"/meters/{NEW_METER}", json={**meter, "key": KEY.hex()})
        assert replaced.status_code == 200
        assert admin.put(f"/meters/{NEW_METER}/key", json={"key": NEW_KEY.hex()}).status_code == 200
        tariff = admin.put(f"/meters/{NEW_METER}/tariff", json={"name": "taf1", "config": TAF1})
        assert tariff.status_code == 200, tariff.text
        assert tariff.json()["tariff"] == {
            "name": "taf1",
            "config": {"price_mct_per_kwh": 31_000, "max_interval_wh": 5000},  # completed
        }
        password = admin.put("/consumers/c-9/password", json={"password": "correct horse"})
        assert password.status_code == 200 and password.json()["password_set"]
        log = admin.get("/log").json()

    gateway = wan.gateway
    record = next(r for r in gateway.meters() if r.meter_id == NEW_METER)
    assert record == MeterRecord(NEW_METER, Medium.ELECTRICITY, "c-9", Security.AES, NEW_KEY)
    assert gateway.tariff_of(NEW_METER) == TariffProfile("taf1", tariff.json()["tariff"]["config"])
    assert wan.served.accounts.check_password("c-9", "correct horse")
    assert not wan.served.accounts.check_password("c-9", "wrong horse")

    kinds = ["meter-added", "meter-reconfigured", "key-changed", "tariff-changed"]
    kinds.append("consumer-password-set")
    for audience in ("administrator", "metrological"):
        for kind in kinds:
            found = entries(wan, audience, kind, lengths)
            assert len(found) == 1, (audience, kind)
            assert found[0].detail["by"] == "admin-anna", (audience, kind)
        assert entries(wan, audience, "tariff-changed")[0].detail["tariff"] == "taf1"
        assert entries(wan, audience, "consumer-password-set")[0].detail["customer"] == "c-9"
    served = log["entries"][lengths["administrator"] :]
    assert [e["kind"] for e in served] == kinds
    assert all(e["detail"]["by"] == "admin-anna" for e in served)
    assert "correct horse" not in json.dumps(log)  # the password is nowhere in a log
    for audience in AUDIENCES:
        assert "correct horse" not in "".join(e.to_json() for e in gateway.logs[audience].entries)


def test_removing_a_meter(wan: Wan) -> None:
    elec = wan.fed.id("elec")
    with wan.admin() as admin:
        admin.put(f"/meters/{elec}/tariff", json={"name": "taf1", "config": TAF1})
        removed = admin.delete(f"/meters/{elec}")
        assert removed.status_code == 200 and removed.json() == {"removed": elec}
        assert elec not in [m["meter_id"] for m in admin.get("/meters").json()["meters"]]
        assert admin.get(f"/meters/{elec}").status_code == 404
    for audience in ("administrator", "metrological"):
        assert entries(wan, audience, "meter-removed")[0].detail == {"by": "admin-anna"}


def test_an_ecdsa_meter_takes_its_public_key(wan: Wan) -> None:
    with wan.admin() as admin:
        body = {"medium": "water", "customer": "c-3", "security": "ecdsa", "key": PUBLIC_DER.hex()}
        assert admin.put("/meters/MCL-30000002", json=body).status_code == 201
        body = {"medium": "gas", "customer": "c-3", "security": "none"}
        assert admin.put("/meters/MCL-30000003", json=body).json()["key_set"] is False
    records = {r.meter_id: r for r in wan.gateway.meters()}
    assert records["MCL-30000002"].key == PUBLIC_DER
    assert records["MCL-30000003"].key is None


def test_the_administrator_never_sees_a_reading(wan: Wan) -> None:
    fed = wan.fed
    registers = fed.registers("c-1") | fed.registers("c-2")
    assert len(registers) == 3 * fed.count  # three meters, every quarter hour accepted
    with wan.admin() as admin:
        answers = [admin.get("/"), admin.get("/meters"), admin.get("/log")]
        answers += [admin.get(f"/meters/{fed.id(name)}") for name in fed.sensors]
        answers.append(admin.put(f"/meters/{fed.id('gas')}/key", json={"key": NEW_KEY.hex()}))
    for answer in answers:
        assert answer.status_code == 200, answer.text
        text = answer.text
        for register in registers:
            assert str(register) not in text, (answer.url, register)
        for word in ("register", "reading", "readings", "cyclic", "temperature"):
            assert f'"{word}"' not in text, (answer.url, word)
        assert KEY.hex() not in text and NEW_KEY.hex() not in text  # nor a key
    meters = answers[1].json()["meters"]
    assert {m["meter_id"] for m in meters} == {fed.id(n) for n in fed.sensors}
    assert set(meters[0]) == {
        "meter_id", "medium", "unit", "customer", "security", "key_set", "tariff",
    }  # fmt: skip


# -- who is refused ---------------------------------------------------------------------------
def test_no_client_certificate_is_refused_in_the_handshake(wan: Wan) -> None:
    before = wan.gateway.meters()
    body = {"medium": "electricity", "customer": "c-9", "security": "aes-128", "key": KEY.hex()}
    with wan.client(None) as anonymous, pytest.raises(httpx.TransportError):
        anonymous.put(f"/meters/{NEW_METER}", json=body)
    assert wan.gateway.meters() == before


def test_a_certificate_of_a_foreign_ca_is_refused_in_the_handshake(wan: Wan) -> None:
    before = wan.gateway.meters()
    foreign = wan.parties.foreign_admin  # an administrator of the same name, another root
    with wan.client(foreign, wan.parties.foreign_ids) as client:
        with pytest.raises(httpx.TransportError):
            client.get("/meters")
        with pytest.raises(httpx.TransportError):
            client.delete(f"/meters/{wan.fed.id('elec')}")
    assert wan.gateway.meters() == before


def test_a_certificate_of_another_role_is_refused(wan: Wan) -> None:
    before, lengths = wan.gateway.meters(), wan.log_lengths()
    with wan.client(wan.parties.receiver) as receiver:  # TLS accepts it: it chains to the root
        for answer in (
            receiver.get("/meters"),
            receiver.get("/log"),
            receiver.delete(f"/meters/{wan.fed.id('elec')}"),
            receiver.put("/consumers/c-1/password", json={"password": "let me in please"}),
            receiver.put("/meters/MCL-30000009", content=b"{not json"),  # refused before parsing
        ):
            status, reason, detail = refusal(answer)
            assert (status, reason) == (403, "wrong-role"), answer.text
            assert "c-1 has role receiver, expected gateway-administrator" in detail
    assert wan.gateway.meters() == before
    assert not wan.served.accounts.has_password("c-1")
    refused = entries(wan, "administrator", "wan-refused")
    assert len(refused) == 5 and refused[0].detail["reason"] == "wrong-role"
    assert refused[0].detail["client"] == "127.0.0.1"
    assert len(wan.gateway.logs["metrological"].entries) == lengths["metrological"]


def test_a_revoked_administrator_is_refused(wan: Wan) -> None:
    revoked = wan.parties.other_admin
    with wan.client(revoked) as client:
        assert client.get("/").json()["administrator"] == "admin-revoked"
        pki = wan.parties.ids.pki
        assert pki is not None
        pki.revoke(revoked.certificate.serial_number)
        status, reason, _ = refusal(client.get("/meters"))  # the CRL counts at once
        assert (status, reason) == (403, "certificate-revoked")


def test_without_tls_nobody_is_authenticated(wan: Wan) -> None:
    assert wan.parties.ids.pki is not None
    app = create_wan_app(wan.gateway, wan.parties.ids.pki.trust_store(), ConsumerAccounts())
    status, reason, _ = refusal(TestClient(app).get("/meters"))
    assert (status, reason) == (401, "not-authenticated")


# -- bad input --------------------------------------------------------------------------------
AES_METER = {"medium": "electricity", "customer": "c-9", "security": "aes-128"}
BAD_INPUT: dict[str, tuple[str, str, Any, str, str]] = {
    # name: (method, path, JSON body or raw bytes, reason, words of the detail)
    "malformed JSON": ("PUT", "/meters/{elec}", b'{"medium": "gas",', "malformed-request", "JSON"),
    "not an object": ("PUT", "/meters/{elec}", b"[1, 2]", "malformed-request", "body"),
    "bad hex key": (
        "PUT", "/meters/{elec}", {**AES_METER, "key": "zz" * 16}, "bad-key", "not hexadecimal",
    ),
    "short AES key": (
        "PUT", "/meters/{elec}", {**AES_METER, "key": "00" * 15}, "wrong-key-length",
        "an AES-128 key has 16 bytes (32 hex digits), not 15",
    ),
    "long new key": (
        "PUT", "/meters/{elec}/key", {"key": "00" * 17}, "wrong-key-length", "not 17",
    ),
    "no key": ("PUT", "/meters/{elec}", AES_METER, "bad-key", "needs a key"),
    "unknown medium": (
        "PUT", "/meters/{elec}", {**AES_METER, "medium": "steam", "key": KEY.hex()},
        "malformed-request", "body.medium: Input should be 'electricity', 'gas', 'water' or 'heat'",
    ),
    "unknown security": (
        "PUT", "/meters/{elec}", {**AES_METER, "security": "rot13", "key": KEY.hex()},
        "malformed-request", "body.security",
    ),
    "unknown field": (
        "PUT", "/meters/{elec}", {**AES_METER, "key": KEY.hex(), "colour": "red"},
        "malformed-request", "body.colour: Extra inputs are not permitted",
    ),
    "bad meter id": (
        "PUT", "/meters/not-a-meter", {**AES_METER, "key": KEY.hex()}, "bad-meter-id",
        "three capital letters",
    ),
    "bad customer": (
        "PUT", "/meters/{elec}", {**AES_METER, "key": KEY.hex(), "customer": "c 1/.."},
        "bad-customer", "no customer id",
    ),
    "ECDSA key not DER": (
        "PUT", "/meters/{elec}", {**AES_METER, "security": "ecdsa", "key": "3000"}, "bad-key",
        "DER SubjectPublicKeyInfo",
    ),
    "key for security none": (
        "PUT", "/meters/{elec}", {**AES_METER, "security": "none", "key": KEY.hex()}, "bad-key",
        "takes no key",
    ),
    "short password": (
        "PUT", "/consumers/c-1/password", {"password": "short"}, "bad-password", "8 to 256",
    ),
    "bad tariff config": (
        "PUT", "/meters/{elec}/tariff", {"name": "taf1", "config": {"price_mct_per_kwh": -5}},
        "bad-tariff-config", "taf1: price_mct_per_kwh must be a positive integer, got -5",
    ),
    "unknown tariff setting": (
        "PUT", "/meters/{elec}/tariff", {"name": "taf3", "config": {"thresholds_wh": [100]}},
        "bad-tariff-config", "taf3: prices_mct_per_kwh needs one price per band (2)",
    ),
    "unknown tariff": (
        "PUT", "/meters/{elec}/tariff", {"name": "taf9", "config": {}}, "unknown-tariff",
        "known: taf1, taf2, taf3, taf4",
    ),
    "bad log range": ("GET", "/log?start=-1", None, "malformed-request", "query.start"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_refused_and_loses_nothing(wan: Wan, case: str) -> None:
    method, path, body, reason, words = BAD_INPUT[case]
    elec = wan.fed.id("elec")
    with wan.admin() as admin:
        admin.put(f"/meters/{elec}/tariff", json={"name": "taf1", "config": TAF1})
        before, lengths = wan.gateway.meters(), wan.log_lengths()
        tariff = wan.gateway.tariff_of(elec)
        kwargs: dict[str, Any] = {}
        if isinstance(body, bytes):
            kwargs = {"content": body, "headers": {"content-type": "application/json"}}
        elif body is not None:
            kwargs = {"json": body}
        answer = admin.request(method, path.format(elec=elec), **kwargs)
        assert refusal(answer)[:2] == (422, reason), answer.text
        assert words in refusal(answer)[2], answer.text
        assert admin.get(f"/meters/{elec}").json()["tariff"]["name"] == "taf1"
    assert wan.gateway.meters() == before  # nothing configured was lost or changed
    assert wan.gateway.tariff_of(elec) == tariff
    assert wan.log_lengths() == lengths
    assert not wan.served.accounts.has_password("c-1")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/meters/MCL-99999999", None),
        ("DELETE", "/meters/MCL-99999999", None),
        ("PUT", "/meters/MCL-99999999/key", {"key": KEY.hex()}),
        ("PUT", "/meters/MCL-99999999/tariff", {"name": "taf1", "config": TAF1}),
    ],
)
def test_an_unknown_meter_is_404(wan: Wan, method: str, path: str, body: Any) -> None:
    lengths = wan.log_lengths()
    with wan.admin() as admin:
        answer = admin.request(method, path, json=body)
    assert refusal(answer) == (404, "unknown-meter", "gateway gw-sides has no meter MCL-99999999")
    assert wan.log_lengths() == lengths


def test_an_oversized_body_is_refused(wan: Wan) -> None:
    with wan.admin() as admin:
        answer = admin.put("/consumers/c-1/password", json={"password": "x" * 70_000})
    assert refusal(answer)[:2] == (413, "oversized-request")
    assert not wan.served.accounts.has_password("c-1")


def test_a_body_of_unknown_length_is_refused_unread(wan: Wan) -> None:
    """Chunked, a body has no length to check up front: it could grow past the limit."""

    def chunks() -> Iterator[bytes]:
        yield b'{"password": "'
        yield b"x" * 70_000
        yield b'"}'

    with wan.admin() as admin:
        json_type = {"content-type": "application/json"}
        answer = admin.put("/consumers/c-1/password", content=chunks(), headers=json_type)
    assert answer.request.headers.get("transfer-encoding") == "chunked"
    assert refusal(answer) == (411, "length-required", "a request body needs a Content-Length")
    assert not wan.served.accounts.has_password("c-1")
