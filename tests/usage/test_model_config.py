"""The [predict] keys of the model lifecycle: one switch, intervals and budgets validated."""

from __future__ import annotations

import tomllib

import pytest

from agent.config import Config, ConfigError, config_from_dict, render_defaults


def test_defaults_read_back_and_one_switch_stops_training() -> None:
    cfg = config_from_dict(tomllib.loads(render_defaults())).predict
    assert cfg == Config().predict and cfg.train is True
    assert cfg.train_budget == 120.0 and cfg.model_max_bytes == 1024 * 1024
    assert config_from_dict({"predict": {"train": False}}).predict.train is False
    ok = config_from_dict({"predict": {"train_min_interval": 60, "train_max_age": 60,
                                       "model_max_bytes": "512KiB"}}).predict
    assert ok.model_max_bytes == 512 * 1024


@pytest.mark.parametrize(("raw", "key"), [
    ({"predict": {"train": "yes"}}, "predict.train"),
    ({"predict": {"train_budget": -1}}, "predict.train_budget"),
    ({"predict": {"model_interval": 0}}, "predict.model_interval"),
    ({"predict": {"train_drift": 1.5}}, "predict.train_drift"),
    ({"predict": {"train_epochs": 0}}, "predict.train_epochs"),
    ({"predict": {"model_max_bytes": "2MiB"}}, "predict.model_max_bytes"),
    ({"predict": {"train_memory": "1MiB"}}, "predict.train_memory"),
    ({"predict": {"train_min_interval": 7200, "train_max_age": 3600}}, "predict.train_max_age"),
])
def test_bad_values_name_the_key(raw: dict[str, dict[str, object]], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw)
    assert e.value.key == key
