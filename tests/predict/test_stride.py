"""Stride prediction on numbered series: the next tile of a scan, padding kept, no false strides."""

from __future__ import annotations

from agent.predict.stride import Stride, step


def test_a_scan_predicts_the_next_numbers_with_padding() -> None:
    s = Stride()
    for i, name in enumerate(["/t/N60W133_dem.nc", "/t/N60W134_dem.nc"]):
        s.observe("d", name, float(i), 1)
    ranked = s.predict("d", 2)
    assert [r for r, _ in ranked] == ["/t/N60W135_dem.nc", "/t/N60W136_dem.nc"]
    assert ranked[0][1] == 0.5  # no record yet: (0 + 1) / (0 + 2)
    s.observe("d", "/t/N60W135_dem.nc", 2.0, 1)  # the stride was right: confidence grows
    assert s.predict("d", 1)[0] == ("/t/N60W136_dem.nc", 2 / 3)
    z = Stride()
    z.observe("d", "/p/h09v04", 0.0, 1)
    z.observe("d", "/p/h09v05", 1.0, 1)
    assert z.predict("d", 1)[0][0] == "/p/h09v06"


def test_no_stride_when_text_or_two_numbers_differ() -> None:
    assert step(["/a", "1", ".png"], ["/b", "2", ".png"]) is None
    assert step(["/a", "1", "x", "1", ""], ["/a", "2", "x", "2", ""]) is None
    assert step(["/a", "7", ""], ["/a", "7", ""]) is None
    assert step(["/a", "5", ""], ["/a", "3", ""]) == (1, -2)
    s = Stride()
    s.observe("d", "/index.html", 0.0, 1)
    s.observe("d", "/about.html", 1.0, 1)
    assert s.predict("d", 3) == []
    s.observe("d", "/img2.png", 2.0, 1)
    s.observe("d", "/img1.png", 3.0, 1)  # counting down to 0, never below
    assert [r for r, _ in s.predict("d", 5)] == ["/img0.png"]


def test_a_browsing_device_loses_confidence_and_state_is_bounded() -> None:
    s = Stride(max_devices=3)
    for i in range(20):  # a stride is detected (/a1, /a2) but never followed (/zzz)
        for name in ("/a1", "/a2", "/zzz"):
            s.observe("d", name, float(i), 1)
    s.observe("d", "/x1", 100.0, 1)
    s.observe("d", "/x2", 101.0, 1)
    assert s.predict("d", 1)[0][1] < 0.2
    for i in range(10):
        s.observe(f"dev{i}", "/a1", 0.0, 1)
    assert s.state_size() <= s.max_state() and len(s._devices) == 3
