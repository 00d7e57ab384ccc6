"""Members' reports are peer input: non-finite or out-of-range numbers drop the report with
a typed, logged reason (never an OverflowError from int(inf), never a NaN score)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytest

from agent.authority.policy.reports import BadReport, parse_holdings
from agent.authority.service import AuthorityService
from agent.errors import ErrorKind

RID = "ab" * 16
MEMBER = "cd" * 32


def entry(usage: Any = 3.0, bitrate: Any = 1e6, err: Any = 0.0, integrity: Any = 0,
          name: Any = "photos") -> list[Any]:
    return [usage, bitrate, err, integrity, name]


def test_a_sound_report_parses():
    load, up, holdings, names = parse_holdings({RID: entry()}, load=0.5, up=1, wall=100.0)
    assert (load, up, names) == (0.5, 1.0, {RID: "photos"})
    assert holdings[RID].quality.integrity_failures == 0
    assert holdings[RID].usage.value == 3.0


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, -1, 2.0**60, True, "1"])
@pytest.mark.parametrize("where", range(4))
def test_non_finite_or_out_of_range_numbers_are_refused(bad, where):
    fields = entry()
    fields[where] = bad
    with pytest.raises(BadReport) as e:
        parse_holdings({RID: fields}, load=0.1, up=0.1, wall=1.0)
    assert e.value.kind is ErrorKind.INVALID


@pytest.mark.parametrize("bad", [math.inf, math.nan, -0.5, 1.5])
def test_load_and_uptime_are_checked_too(bad):
    with pytest.raises(BadReport):
        parse_holdings({}, load=bad, up=0.1, wall=1.0)
    with pytest.raises(BadReport):
        parse_holdings({}, load=0.1, up=bad, wall=1.0)


def test_malformed_entries_are_skipped_not_fatal():
    _l, _u, holdings, _n = parse_holdings(
        {"short": entry(), RID: [1, 2, 3], "x" * 32: entry(name=7)}, load=0, up=0, wall=1.0)
    assert holdings == {}


def test_the_service_drops_an_infinite_report_with_a_logged_reason(tmp_path: Path, caplog):
    svc = AuthorityService("ef" * 32, "me", tmp_path, None, None, None, None,  # type: ignore[arg-type]
                           lambda coro, name: None)
    try:
        good = {"c": svc.cluster_id, "h": {RID: entry()}, "load": 0.2, "up": 0.5}
        svc._on_report(MEMBER, good, 10.0)
        before = svc.policy.reports.by_member[MEMBER]
        bad = {"c": svc.cluster_id, "h": {RID: entry(integrity=math.inf)}, "load": 0.2,
               "up": 0.5}
        with caplog.at_level(logging.WARNING, logger="shoal.authority"):
            svc._on_report(MEMBER, bad, 11.0)  # no OverflowError
        assert svc.policy.reports.by_member[MEMBER] is before  # the previous report stays
        assert any(r.getMessage() == "report dropped" for r in caplog.records)
        nan = {"c": svc.cluster_id, "h": {RID: entry(usage=math.nan)}, "load": 0.2, "up": 0.5}
        svc._on_report(MEMBER, nan, 12.0)
        assert svc.policy.reports.by_member[MEMBER] is before
    finally:
        svc.close()
