"""The [prefetch] section (strict, one switch), the agent without it, and the two listings."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import Config, ConfigError, NodeConfig, config_from_dict, render_defaults
from agent.control import ControlError
from agent.control.listings import mirrors_text, prefetch_text
from agent.node import Node


def test_defaults_and_the_strict_schema() -> None:
    cfg = Config().prefetch
    assert cfg.enabled and cfg.mirrors and cfg.device_budget == 256 * 1024 * 1024
    assert "[prefetch]" in render_defaults() and "enabled = true" in render_defaults()
    assert config_from_dict({"prefetch": {"device_budget": "2MiB"}}).prefetch.device_budget \
        == 2 * 1024 * 1024
    for doc, key in (({"prefetch": {"enable": False}}, "prefetch.enable"),
                     ({"prefetch": {"enabled": "no"}}, "prefetch.enabled"),
                     ({"prefetch": {"max_pending": 0}}, "prefetch.max_pending"),
                     ({"prefetch": {"device_budget": -1}}, "prefetch.device_budget"),
                     ({"prefetch": {"mirror_keep": 5.0, "mirror_temperature": 1.0}},
                      "prefetch.mirror_keep")):
        with pytest.raises(ConfigError) as e:
            config_from_dict(doc)
        assert e.value.key == key


async def test_one_switch_turns_it_off(tmp_path: Path) -> None:
    cfg = config_from_dict({"prefetch": {"enabled": False}})
    node = Node(Config(node=NodeConfig(name="n", data_dir=tmp_path / "n"),
                       prefetch=cfg.prefetch))
    try:
        assert node.mirrors is None
        assert "mirror" not in node.router._requests  # nobody can ask us to mirror
        for cmd in ("prefetch", "mirrors"):
            with pytest.raises(ControlError, match=r"\[prefetch\] enabled = false"):
                await node.commands.table()[cmd]({}, None)  # type: ignore[arg-type]
    finally:
        node.store.close()
    on = Node(Config(node=NodeConfig(name="m", data_dir=tmp_path / "m")))
    try:
        assert on.mirrors is not None and "mirror" in on.router._requests
    finally:
        on.store.close()


def test_the_listings_have_headers_and_escape_what_peers_named() -> None:
    rows = [{"role": "hosting", "resource": "ab" * 16, "device": "cd" * 32,
             "name": "this device", "since": 0.0, "reason": "for evil\x1b[2Jname",
             "served": 3}]
    out = mirrors_text({"enabled": True, "mirrors": rows}, now=120.0)
    assert out.splitlines()[0].split()[:4] == ["RESOURCE", "ROLE", "MIRROR", "DEVICE"]
    assert "\x1b" not in out and "2 min ago" in out
    assert mirrors_text({"enabled": False, "mirrors": []}).startswith("no mirrors")
    r = {"enabled": True, "mirrors": True, "predictor": "fallback",
         "predictions": [{"resource": "ab" * 16, "score": 0.9, "size": 1024,
                          "temperature": 2.0, "held": False}],
         "hottest": [{"resource": "ab" * 16, "temperature": 2.0, "mesh": 3.0}],
         "stats": {"prefetched": 2, "used": 1, "held_unused": 1, "wasted_bytes": 0,
                   "local_hits": 4, "mirror_hits": 1, "peer_fetches": 2, "used_ratio": 1.0},
         "budget": {"device": 1 << 20, "reserve": 0, "held": 1024}}
    text = prefetch_text(r)
    assert "1 of 2 prefetched copies used" in text and "NEXT" in text
    assert "TEMPERATURE" in text
