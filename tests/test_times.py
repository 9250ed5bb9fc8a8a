"""The library's time parsers (admin listing dates, check-exists timestamps) against any
string a client can send: a bound or a ValidationFailed naming the field, nothing else."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import ValidationFailed
from library.times import day_or_time_bound, instant_parse, window_bounds

pytestmark = pytest.mark.pure  # no emulators needed

BOUND = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}")
DIGITS = st.sampled_from("0123456789²³¹٣۴߅१৪੫૬୭௮౯೦൧๒໓༤၅႖៧᠘")  # ASCII and other scripts'

# What clients send: anything, near-miss ISO strings, epoch numbers, the ends of time.
edge_days = st.sampled_from(["0001-01-01", "9999-12-31", "2024-02-29", "2023-02-29",
                             "2024-13-45", "2024-00-10", "0000-01-01"])
edge_times = st.tuples(edge_days, st.sampled_from(["", "T00:00:00", "T23:59:59", "T23:59:59.999999",
                                                   "T24:00:00", " 12:00"]),
                       st.sampled_from(["", "Z", "+00:00", "+14:00", "-14:00", "+23:59",
                                        "-23:59", "+24:00", "z"])).map("".join)
any_datetime = st.datetimes(timezones=st.one_of(st.none(), st.timezones())).map(
    lambda moment: moment.isoformat())
epochs = st.integers(min_value=0, max_value=10**14).map(str)
lookalikes = st.lists(DIGITS, min_size=4, max_size=14).map("".join) | st.tuples(
    st.lists(DIGITS, min_size=4, max_size=4), st.lists(DIGITS, min_size=2, max_size=2),
    st.lists(DIGITS, min_size=2, max_size=2)).map(lambda p: "-".join("".join(x) for x in p))
client_strings = st.one_of(st.text(max_size=40), edge_days, edge_times, any_datetime, epochs,
                           lookalikes)


def _refused_naming(field: str, call):
    with pytest.raises(ValidationFailed) as refused:
        call()
    assert refused.value.message.startswith(f"{field}: ")
    assert refused.value.extra["details"][0]["field"] == field


@given(client_strings)
def test_any_string_is_an_instant_or_a_validation_error(value):
    try:
        moment = instant_parse(value, field="timestamp")
    except ValidationFailed as refused:
        assert refused.message.startswith("timestamp: ")
    else:
        assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0)


@given(client_strings, st.booleans())
def test_any_string_is_a_day_or_time_bound_or_a_validation_error(value, end):
    try:
        bound = day_or_time_bound(value, field="date_to", end=end)
    except ValidationFailed as refused:
        assert refused.message.startswith("date_to: ")
    else:
        assert BOUND.fullmatch(bound)


@given(client_strings)
def test_any_string_is_a_window_or_a_validation_error(value):
    try:
        first, after = window_bounds(value, field="timestamp", around=timedelta(minutes=2))
    except ValidationFailed as refused:
        assert refused.message.startswith("timestamp: ")
    else:
        assert BOUND.fullmatch(first) and BOUND.fullmatch(after) and first < after


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
def test_bounds_sort_like_the_times_they_bound(moment):
    text = moment.replace(tzinfo=UTC).isoformat()
    assert day_or_time_bound(text, field="date_from", end=False) <= text.replace("+00:00", "Z")
    assert day_or_time_bound(text, field="date_to", end=True) > text.replace("+00:00", "Z")


@pytest.mark.parametrize("field,call", [
    ("date_from", lambda: day_or_time_bound("2024-13-45", field="date_from", end=False)),
    ("date_to", lambda: day_or_time_bound("9999-12-31", field="date_to", end=True)),
    ("date_to", lambda: day_or_time_bound("9999-12-31T23:59:59", field="date_to", end=True)),
    ("date_from", lambda: day_or_time_bound("0001-01-01T00:00:00+01:00", field="date_from",
                                            end=False)),
    ("date_from", lambda: day_or_time_bound("２０２４-01-01", field="date_from", end=False)),
    ("timestamp", lambda: window_bounds("9999-12-31T23:59:59", field="timestamp",
                                        around=timedelta(minutes=2))),
    ("timestamp", lambda: window_bounds("0001-01-01", field="timestamp",
                                        around=timedelta(minutes=2))),
    ("timestamp", lambda: instant_parse("١٧٠٠٠٠٠٠٠٠", field="timestamp")),
])
def test_the_ends_of_time_and_impossible_days_are_refused_by_name(field, call):
    _refused_naming(field, call)


def test_a_year_before_1000_keeps_four_digits_so_bounds_sort():
    assert day_or_time_bound("0999-06-01", field="date_from", end=False) == "0999-06-01T00:00:00"
