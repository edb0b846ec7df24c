"""A service process's configuration file: read, checked, and every mistake named with the
file and the setting (``metrocloud serve SERVICE --config FILE``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from metrocloud.cli import app
from metrocloud.cloud.config import load_config
from metrocloud.cloud.legal import KEY_CACHE_MB, Legal, key_cache_mb
from metrocloud.cloud.runtime import DataDir
from metrocloud.cloud.storage import Storage
from metrocloud.core.errors import ConfigurationError

FULL = """
service = "legal"
instance = "legal-2"
data = "legal-2"
port = 8500

[bus]
urls = ["tls://127.0.0.1:4222", "tls://127.0.0.1:4223"]

[storage]
database = "postgresql://metrocloud@127.0.0.1:5432/metrocloud"
logbook = "sqlite:////srv/logbook.sqlite"

[cloud]
pki_url = "https://127.0.0.1:8443"
crl_refresh_s = 5
witnesses = { witness-1 = "https://127.0.0.1:8601" }

[options]
fault = ""
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "legal.toml"
    path.write_text(text)
    return path


def test_a_full_configuration_reads_as_the_embedded_description(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    assert config.process == "legal-2" and config.service == "legal"
    assert config.data == tmp_path / "legal-2"  # relative to the file
    assert config.cluster() == {
        "nats_url": "tls://127.0.0.1:4222,tls://127.0.0.1:4223",
        "pki_url": "https://127.0.0.1:8443",
        "crl_refresh_s": 5.0,
        "witnesses": {"witness-1": "https://127.0.0.1:8601"},
    }
    assert config.service_options() == {"fault": "", "port": "8500", "name": "legal-2"}
    data = DataDir(config.data, config)
    assert data.cluster() == config.cluster()
    assert data.store_location == "postgresql://metrocloud@127.0.0.1:5432/metrocloud"
    assert data.logbook_location == "sqlite:////srv/logbook.sqlite"
    assert DataDir(tmp_path).store_location == tmp_path / "metrocloud.sqlite"


def test_the_host_is_where_the_process_listens(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL.replace("port = 8500", 'port = 8500\nhost = "::1"')))
    assert config.host == "::1" and config.service_options()["host"] == "::1"
    assert "host" not in load_config(write(tmp_path, FULL)).service_options()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("[bus]\nurls", "[bus]\nurl"), "bus.urls: missing; bus.url: unknown setting"),
        (('service = "legal"', 'service = "Legal!"'), "service: String should match"),
        (("tls://127.0.0.1:4223", "http://127.0.0.1:4223"), "is no broker URL"),
        (("postgresql://metrocloud", "mysql://metrocloud"), "storage.database: "),
        (("port = 8500", "port = 70000"), "port: Input should be less than or equal to 65535"),
        (("https://127.0.0.1:8443", "http://127.0.0.1:8443"), "cloud.pki_url: "),
        (("crl_refresh_s = 5", "crl_refresh_s = 0"), "cloud.crl_refresh_s: "),
        (('data = "legal-2"\n', ""), "data: missing"),
        (("[options]", "[option]"), "option: unknown setting"),
        (("port = 8500", 'port = 8500\nhost = "10.0.0.1/24"'), "host: String should match"),
        (("[options]", '[broker]\nroutes = ["10.0.0.2"]\n[options]'), "is no route address"),
    ],
)
def test_a_mistake_is_named_with_file_and_setting(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    path = write(tmp_path, FULL.replace(*change))
    with pytest.raises(ConfigurationError) as refused:
        load_config(path)
    assert str(refused.value).startswith(f"config {path}: ")
    assert message in str(refused.value)


def test_unreadable_or_broken_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read it"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigurationError, match="not TOML"):
        load_config(write(tmp_path, "service = legal"))


def serve(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["serve", *args], env={"COLUMNS": "300", "NO_COLOR": "1"})
    return result.exit_code, " ".join(result.output.split())


def test_serve_checks_what_the_file_cannot_say(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    code, out = serve("display", "--config", str(path), "--check")
    assert code == 2 and "is for legal, not display" in out
    code, out = serve("legal", "--config", str(path), "--check")
    assert code == 2 and "the PKI's root certificate is missing" in out
    (tmp_path / "legal-2" / "pki").mkdir(parents=True)
    (tmp_path / "legal-2" / "pki" / "root.pem").write_text("-")
    code, out = serve("legal", "--config", str(path), "--check")
    assert code == 2 and "legal's certificate is missing" in out
    ids = tmp_path / "legal-2" / "identities"
    ids.mkdir()
    (ids / "legal.pem").write_text("-")
    (ids / "legal.key").write_text("-")
    code, out = serve("legal", "--config", str(path), "--check")
    assert code == 0 and "legal-2 (legal)" in out and "fine" in out
    no_bus = write(tmp_path, FULL.replace('[bus]\nurls = ["tls://127.0.0.1:4222", '
                                          '"tls://127.0.0.1:4223"]\n', ""))  # fmt: skip
    code, out = serve("legal", "--config", str(no_bus), "--check")
    assert code == 2 and "legal connects to the broker: [bus] urls missing" in out
    unknown = write(tmp_path, FULL.replace('service = "legal"', 'service = "billing"'))
    code, out = serve("billing", "--config", str(unknown), "--check")
    assert code == 2 and "'billing': one of" in out


@pytest.mark.parametrize("value", ["lots", "0", "-5", "1.5"])
def test_serve_refuses_a_key_budget_legal_cannot_use(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, FULL.replace('fault = ""', f'key_cache_mb = "{value}"'))
    code, out = serve("legal", "--config", str(path), "--check")
    assert code == 2, out
    assert f"option key_cache_mb must be a positive whole number of MiB, got '{value}'" in out


def test_a_key_budget_is_legal_s_option_alone() -> None:
    assert key_cache_mb({"key_cache_mb": "512"}) == 512
    assert key_cache_mb({}) == KEY_CACHE_MB
    with pytest.raises(ConfigurationError, match="key_cache_mb"):
        Legal.check_options({"key_cache_mb": "many"})
    Storage.check_options({"key_cache_mb": "many"})  # not storage's option: not its concern
