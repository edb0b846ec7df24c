"""The detector's settings: their defaults, a rules file that overrides a few, and every
mistake named with the file and the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from metrocloud.core.errors import ConfigurationError
from metrocloud.detection.rules import (
    DEFAULT_FLOORS,
    DetectorConfig,
    Level,
    feature_component,
    feature_kind,
    load_rules,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "anomaly.toml"
    path.write_text(text)
    return path


def test_levels_are_ordered_and_named() -> None:
    assert Level.GREEN < Level.YELLOW < Level.RED
    assert [level.label for level in Level] == ["green", "yellow", "red"]
    assert max(Level.YELLOW, Level.RED) is Level.RED


def test_the_defaults() -> None:
    config = DetectorConfig()
    assert (config.interval_s, config.training_s, config.min_training_samples) == (2.0, 120.0, 20)
    assert (config.smoothing, config.z_yellow, config.margin) == (5, 6.0, 0.5)
    assert (config.joint, config.joint_trees, config.joint_margin, config.joint_seed) == (
        True,
        100,
        0.05,
        0,
    )
    assert (config.enter_yellow, config.enter_red, config.leave) == (3, 2, 10)
    assert (config.down_red, config.stall_s, config.memory_red_factor) == (2, 15.0, 3.0)
    assert config.ignore == [] and config.default_floor == 1.0
    assert config.floors == DEFAULT_FLOORS
    assert config.floors["cpu"] == 0.05 and config.floors["pending"] == 5.0


def test_a_feature_s_floor_comes_from_its_kind() -> None:
    config = DetectorConfig()
    assert feature_kind("legal/in:legal.in.reading.*") == "in"
    assert feature_kind("tariff-taf1/latency:tariff-taf1:evaluate") == "latency"
    assert feature_component("tariff-taf1/latency:tariff-taf1:evaluate") == "tariff-taf1"
    assert config.floor("legal/latency:tariff-taf1:read-out") == 0.05
    assert config.floor("legal/rss_mb") == 16.0
    assert config.floor("legal/something_new") == 1.0


def test_ignore_patterns_match_whole_feature_names() -> None:
    config = DetectorConfig(ignore=["*/io_*", "storage/latency:*"])
    assert config.ignored("legal/io_read_kbs")
    assert config.ignored("storage/latency:storage-readings")
    assert not config.ignored("legal/latency:legal")
    assert not config.ignored("legal/cpu")


def test_a_rules_file_overrides_a_few_settings(tmp_path: Path) -> None:
    config = load_rules(
        write(
            tmp_path,
            """
            [detector]
            interval_s = 5
            z_yellow = 8.5
            enter_red = 3
            joint = false
            ignore = ["*/io_*"]
            floors = { cpu = 0.1, queue = 2.0 }
            """,
        )
    )
    assert config.interval_s == 5.0 and config.z_yellow == 8.5 and config.enter_red == 3
    assert config.joint is False and config.ignore == ["*/io_*"]
    assert config.floors["cpu"] == 0.1 and config.floors["queue"] == 2.0
    assert config.floors["rss_mb"] == 16.0  # the other defaults stay
    assert config.training_s == 120.0 and config.leave == 10


def test_a_file_without_a_detector_table_gives_the_defaults(tmp_path: Path) -> None:
    assert load_rules(write(tmp_path, "")) == DetectorConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[detector]\nz_yelow = 7", r"detector\.z_yelow: unknown setting"),
        ('[detector]\nenter_red = "two"', r"detector\.enter_red: Input should be a valid integer"),
        ("[detector]\nsmoothing = 2.5", r"detector\.smoothing: Input should be a valid integer"),
        ('[detector]\njoint = "yes"', r"detector\.joint: Input should be a valid boolean"),
        ("[detector]\ninterval_s = 0", r"detector\.interval_s: Input should be greater than 0"),
        ("[detector]\nmemory_red_factor = 1", r"detector\.memory_red_factor: .*greater than 1"),
        ("[detector]\nfloors = { cpu = 0 }", r"detector\.floors: floor of 'cpu' must be greater"),
        ('[detector]\nignore = "*/io_*"', r"detector\.ignore: Input should be a valid list"),
        ("[detecter]\nz_yellow = 7", r"detecter: unknown setting"),
        ("detector = 3", r"detector: must be a table"),
        ("[detector\n", r"not TOML"),
    ],
)
def test_mistakes_name_the_file_and_the_setting(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError, match=message) as caught:
        load_rules(path)
    assert str(caught.value).startswith(f"rules {path}: ")


def test_a_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read it"):
        load_rules(tmp_path / "missing.toml")
