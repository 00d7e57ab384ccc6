"""The [usage] and [predict] configuration keys: defaults, parsing, validation."""

from __future__ import annotations

import tomllib

import pytest

from agent.config import Config, ConfigError, config_from_dict, render_defaults


def test_defaults_render_as_toml_that_reads_back() -> None:
    raw = tomllib.loads(render_defaults())
    cfg = config_from_dict(raw)
    assert cfg.usage == Config().usage and cfg.predict == Config().predict
    assert cfg.predict.share is True and cfg.predict.share_epsilon == 0.0


def test_one_switch_turns_sharing_off() -> None:
    assert config_from_dict({"predict": {"share": False}}).predict.share is False


@pytest.mark.parametrize(("raw", "key"), [
    ({"predict": {"share": "no"}}, "predict.share"),
    ({"predict": {"share_k": 0}}, "predict.share_k"),
    ({"predict": {"share_k": 2.5}}, "predict.share_k"),
    ({"predict": {"share_epsilon": -1}}, "predict.share_epsilon"),
    ({"predict": {"share_delta": 0.5}}, "predict.share_delta"),
    ({"predict": {"share_jitter": 1.0}}, "predict.share_jitter"),
    ({"predict": {"prefetch_base": "2MiB", "prefetch_max": "1MiB"}}, "predict.prefetch_max"),
    ({"predict": {"gossip": True}}, "predict.gossip"),
    ({"usage": {"max_bytes": "1KiB"}}, "usage.max_bytes"),
    ({"usage": {"max_bytes": "128KiB", "segment_bytes": "256KiB"}}, "usage.segment_bytes"),
    ({"usage": {"key_rotation": 86400, "max_age": 86400}}, "usage.max_age"),
    ({"usage": {"half_life": 0}}, "usage.half_life"),
])
def test_bad_values_name_the_key(raw: dict[str, dict[str, object]], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw)
    assert e.value.key == key


def test_sizes_and_durations_parse() -> None:
    cfg = config_from_dict({"usage": {"max_bytes": "16MiB", "segment_bytes": "1MiB",
                                      "max_age": 3600, "key_rotation": 600}})
    assert (cfg.usage.max_bytes, cfg.usage.segment_bytes) == (16 * 1024**2, 1024**2)
    assert cfg.usage.max_age == 3600.0 and isinstance(cfg.usage.max_age, float)
