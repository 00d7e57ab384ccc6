"""Trace readers: three formats, the evaluation filters, hostile lines counted and skipped."""

from __future__ import annotations

import io

import pytest

from agent.predict import traces
from agent.predict.traces import ReadStats, Request, TraceError, bounded_lines, parse, read

CLF_OK = (b'83.149.9.216 - - [17/May/2015:10:05:03 +0000] "GET /a/b.png?x=1 HTTP/1.1" 200 203023 '
          b'"http://semicomplete.com/" "Mozilla/5.0"\n')
OPENDAP_OK = (b"2015-02-15 05:11AM|&|0b3a|&|ASTGTM|&|2|&|7202|&|12974403|&|"
              b"/opendap/hyrax/A.nc.dods?crs,lat|&|200|&|57752\n")


def lines(*raw: bytes) -> list[bytes | None]:
    return list(bounded_lines(io.BytesIO(b"".join(raw))))


def test_clf_combined_line_parses_and_strips_the_query() -> None:
    (req,) = read(lines(CLF_OK), "clf")
    assert req == Request(1431857103.0, "83.149.9.216", "/a/b.png", 203023)


def test_clf_keeps_the_query_when_asked_and_reads_dash_as_zero_bytes() -> None:
    line = b'1.2.3.4 - - [17/May/2015:10:05:03 +0200] "GET /x?q=1 HTTP/1.0" 304 -\n'
    (req,) = read(lines(line), "clf", keep_query=True)
    assert req.resource == "/x?q=1" and req.size == 0
    assert req.t == 1431857103.0 - 7200  # the zone offset is honoured


def test_non_success_statuses_are_filtered_not_bad() -> None:
    st = ReadStats()
    bad_status = CLF_OK.replace(b" 200 ", b" 404 ")
    assert read(lines(bad_status, CLF_OK), "clf", st) != []
    assert (st.kept, st.filtered, st.bad) == (1, 1, 0)


@pytest.mark.parametrize("line", [
    b"garbage\n",
    b'1.2.3.4 - - [32/Foo/2015:10:05:03 +0000] "GET /x HTTP/1.1" 200 5\n',  # bad date
    b'1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET /x\x1b[31m HTTP/1.1" 200 5\n',  # control
    b'1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET /x HTTP/1.1" 200 99999999999999999\n',
    b'1.2.3.4 - - [17/May/2015:10:05:03 +0000] "\xff\xfe HTTP/1.1" 200 5\n',  # not UTF-8
    b'1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET" 200 5\n',  # no path
])
def test_hostile_clf_lines_are_counted_and_skipped(line: bytes) -> None:
    st = ReadStats()
    got = read(lines(line, CLF_OK), "clf", st)
    assert len(got) == 1 and st.bad == 1 and st.bad_examples == [1]


def test_an_overlong_line_is_drained_without_being_held() -> None:
    huge = b"x" * (traces.MAX_LINE * 3) + b"\n"
    got = lines(huge, CLF_OK)
    assert got[0] is None and got[1] == CLF_OK
    st = ReadStats()
    assert len(read(got, "clf", st)) == 1 and st.bad == 1


def test_opendap_line_keeps_the_query_and_accepts_the_tenth_field() -> None:
    (req,) = read(lines(OPENDAP_OK), "opendap")
    assert req.client == "0b3a" and req.resource == "/opendap/hyrax/A.nc.dods?crs,lat"
    assert req.size == 57752 and req.t == 1423977060.0
    ten = OPENDAP_OK.rstrip(b"\n") + b"|&|deadbeef\n"
    assert len(read(lines(ten), "opendap")) == 1


@pytest.mark.parametrize("line", [
    b"2015-02-15 05:11AM|&|u|&|p\n",  # too few fields
    OPENDAP_OK.replace(b"05:11AM", b"25:11XM"),
    OPENDAP_OK.replace(b"|&|200|&|", b"|&|2x0|&|"),
    OPENDAP_OK.replace(b"57752", b"-5"),
])
def test_hostile_opendap_lines_are_counted(line: bytes) -> None:
    st = ReadStats()
    assert read(lines(line), "opendap", st) == [] and st.bad == 1


def test_csv_header_iso_times_and_time_order() -> None:
    data = (b"time,client,resource,size\n"
            b"20,dev-b,/r2,10\n"
            b"2015-05-17T10:00:00+00:00,dev-a,/r1,5\n"
            b"10,dev-a,/r0,7\n"
            b"nan,dev-a,/r0,7\n"  # not a finite time
            b"10,dev-a,/r0\n")  # three fields
    st = ReadStats()
    got = read(lines(data), "csv", st)
    assert [r.resource for r in got] == ["/r0", "/r2", "/r1"]
    assert st.bad == 2


def test_equal_times_keep_file_order() -> None:
    data = b"5,a,/first,1\n5,a,/second,1\n1,a,/zero,1\n"
    assert [r.resource for r in read(lines(data), "csv")] == ["/zero", "/first", "/second"]


def test_unknown_format_is_an_error_and_max_requests_bounds_the_output() -> None:
    with pytest.raises(TraceError):
        list(parse(lines(CLF_OK), "xml"))
    many = lines(*([b"1,a,/r,1\n"] * 50))
    assert len(read(many, "csv", max_requests=7)) == 7
