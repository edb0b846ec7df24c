"""Meters of four media in the billing pipeline: each meter's contract takes its medium's
largest quarter hour, and what a tariff cannot take is refused before anything starts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from metrocloud.cli import app, parse_media
from metrocloud.field.sensors import Medium
from metrocloud.testbed.pipeline import PipelineConfig

ALL = tuple(Medium)


def test_meters_take_the_media_in_turn() -> None:
    config = PipelineConfig(meters=6, days=1, radio=True, media=ALL)
    assert [config.medium(n) for n in range(1, 7)] == [*ALL, ALL[0], ALL[1]]


@pytest.mark.parametrize("tariff", ["taf1", "taf2"])
def test_each_medium_gets_its_largest_quarter_hour(tariff: str) -> None:
    config = PipelineConfig(meters=4, days=1, radio=True, media=ALL, tariff=tariff)
    for medium in ALL:
        program = config.program(medium)
        expected = 5000 if medium is Medium.ELECTRICITY else medium.max_interval
        assert program.config["max_interval_wh"] == expected
    assert config.program(Medium.HEAT).config_digest != config.program().config_digest


def test_a_medium_the_tariff_cannot_take_is_refused() -> None:
    with pytest.raises(ValueError, match=r"heat meters on taf3: .*below 8192"):
        PipelineConfig(meters=1, days=1, radio=True, media=(Medium.HEAT,), tariff="taf3")
    PipelineConfig(meters=1, days=1, radio=True, media=(Medium.GAS,), tariff="taf3")


def test_other_media_need_the_radio_and_at_least_one_medium() -> None:
    with pytest.raises(ValueError, match="need --radio"):
        PipelineConfig(meters=1, days=1, media=(Medium.WATER,))
    with pytest.raises(ValueError, match="at least one medium"):
        PipelineConfig(meters=1, days=1, radio=True, media=())


def test_demo_refuses_an_unknown_medium_plainly() -> None:
    assert parse_media("gas, heat") == (Medium.GAS, Medium.HEAT)
    result = CliRunner().invoke(app, ["demo", "--radio", "--media", "gas,steam"])
    assert result.exit_code == 2
    assert "unknown medium steam" in result.output and "Traceback" not in result.output
