"""Tests for rnnkit.data.series: reading numeric CSV/TSV columns, missing values, chronological
splits and a normaliser that only ever sees the training part."""

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnkit.data.series import (
    Normalizer,
    causal_fill,
    chronological_split,
    date_axis,
    extend_dates,
    read_series,
)
from rnnkit.errors import DataError

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def write(tmp_path, text, name="s.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_header_quotes_and_a_year_column(tmp_path):
    path = write(tmp_path, '"YEAR","SUNACTIVITY"\n1700,5\n1701,11\n1702,16.5\n')
    s = read_series(path)
    assert s.columns == ["SUNACTIVITY"]
    assert s.date_column == "YEAR"
    assert s.dates == ["1700", "1701", "1702"]
    np.testing.assert_array_equal(s.values[:, 0], [5, 11, 16.5])
    assert list(s.lines) == [2, 3, 4]


def test_choose_columns_by_name_and_number(tmp_path):
    path = write(tmp_path, "date,a,b,c\n2020-01-01,1,2,3\n2020-01-02,4,5,6\n")
    s = read_series(path, columns="c,a")
    assert s.columns == ["c", "a"]
    np.testing.assert_array_equal(s.values, [[3, 1], [6, 4]])
    assert read_series(path, columns=["3"]).columns == ["b"]  # 1-based column number
    with pytest.raises(DataError) as info:
        read_series(path, columns="d")
    assert str(info.value).startswith(f"{path}:1: no column 'd'")


def test_tsv_and_headerless_whitespace(tmp_path):
    tsv = write(tmp_path, "t\tv\n1\t2.5\n2\t3.5\n", "s.tsv")
    assert read_series(tsv).values[:, 0].tolist() == [2.5, 3.5]
    dat = write(tmp_path, "1700   5\n1701  11\n", "s.dat")
    s = read_series(dat, columns="2", date_column="1")
    assert s.dates == ["1700", "1701"] and s.values[:, 0].tolist() == [5, 11]


def test_non_number_names_file_line_and_column(tmp_path):
    path = write(tmp_path, "t,v\n1,2\n2,abc\n")
    with pytest.raises(DataError) as info:
        read_series(path)
    assert str(info.value) == f"{path}:3: column 'v': expected a number, got 'abc'"


def test_wrong_field_count(tmp_path):
    path = write(tmp_path, "t,v\n1,2\n2,3,4\n")
    with pytest.raises(DataError, match=r":3: expected 2 fields \(as in the header\), got 3"):
        read_series(path)


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_series(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is empty"):
        read_series(write(tmp_path, ""))
    with pytest.raises(DataError, match="no data rows"):
        read_series(write(tmp_path, "t,v\n"))


GAPPY = "t,v\n1,\n2,10\n3,NA\n4,\n5,40\n6,50\n"


def test_missing_mask_keeps_nan_and_reports(tmp_path):
    s = read_series(write(tmp_path, GAPPY), missing="mask")
    assert np.isnan(s.values[[0, 2, 3], 0]).all()
    assert s.observed[:, 0].tolist() == [False, True, False, False, True, True]
    assert s.report["missing"] == {"v": 3}
    assert "masked" in s.describe() and "3 missing values" in s.describe()


def test_missing_ffill_is_causal_and_drops_leading_rows(tmp_path):
    s = read_series(write(tmp_path, GAPPY), missing="ffill")
    assert s.values[:, 0].tolist() == [10, 10, 10, 40, 50]
    assert s.dates == ["2", "3", "4", "5", "6"]
    assert s.report["dropped_leading"] == 1


def test_missing_interpolate(tmp_path):
    s = read_series(write(tmp_path, GAPPY), missing="interpolate")
    assert s.values[:, 0].tolist() == [10, 20, 30, 40, 50]


def test_missing_error_names_the_line(tmp_path):
    path = write(tmp_path, GAPPY)
    with pytest.raises(DataError) as info:
        read_series(path, missing="error")
    assert str(info.value).startswith(f"{path}:2: column 'v' has no value")


def test_causal_fill_uses_only_the_past():
    x = np.array([np.nan, 1.0, np.nan, np.nan, 4.0, np.nan])
    np.testing.assert_array_equal(causal_fill(x)[1:], [1, 1, 1, 4, 4])
    assert np.isnan(causal_fill(x)[0])
    # changing a later value never changes an earlier filled one
    y = x.copy()
    y[4] = 1e9
    np.testing.assert_array_equal(causal_fill(x)[:4], causal_fill(y)[:4])


def test_chronological_split():
    assert chronological_split(100, 0.15, 0.2) == (65, 80)
    assert chronological_split(309, 0.15, 0.2) == (201, 247)
    with pytest.raises(DataError, match="nothing left to train on"):
        chronological_split(3, 0.5, 0.4)
    with pytest.raises(DataError, match="test_fraction"):
        chronological_split(10, 0.1, 1.5)


def test_normalizer_sees_only_the_training_rows():
    rng = np.random.default_rng(0)
    train = rng.normal(5.0, 2.0, (200, 1))
    future_calm = rng.normal(5.0, 2.0, (50, 1))
    future_wild = future_calm * 1e6 - 3e7  # the future differs wildly
    a = Normalizer.fit(np.concatenate([train, future_calm])[:200])
    b = Normalizer.fit(np.concatenate([train, future_wild])[:200])
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.std, b.std)
    np.testing.assert_allclose(a.mean, train.mean(0))
    np.testing.assert_allclose(a.inverse(a(train)), train)


@pytest.mark.parametrize("transform", ["sqrt", "log1p"])
def test_transforms_round_trip_and_reject_negatives(transform):
    x = np.array([[0.0], [1.0], [9.0], [150.0]])
    n = Normalizer.fit(x, transform)
    np.testing.assert_allclose(n.inverse(n(x)), x, atol=1e-9)
    with pytest.raises(DataError, match="needs values >= 0"):
        Normalizer.fit(-x, transform)


def test_dates_for_axes_and_future_labels():
    assert date_axis(["1700", "1701"]).tolist() == [1700.0, 1701.0]
    assert date_axis(["19580329", "19580405"]).dtype.kind == "M"
    assert date_axis(["Jan-1-1995", "Feb-1-1995"]).dtype.kind == "M"
    assert date_axis(["a", "b"]) is None
    assert extend_dates(["2006", "2007", "2008"], 2) == ["2009", "2010"]
    assert extend_dates(["2020-01-01", "2020-01-08"], 1) == ["2020-01-15"]
    assert extend_dates(["x", "y"], 2) == ["+1", "+2"]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=2),
        min_size=1,
        max_size=30,
    )
)
def test_fuzz_numbers_round_trip(tmp_path, rows):
    path = tmp_path / "fuzz.csv"
    path.write_text("a,b\n" + "".join(f"{r[0]!r},{r[1]!r}\n" for r in rows))
    s = read_series(path, date_column="none")
    np.testing.assert_array_equal(s.values, np.array(rows))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(alphabet=st.sampled_from(list('0123456789.,-\n\t "aeNA#e+')), max_size=80))
def test_fuzz_garbage_is_a_series_or_a_data_error(tmp_path, text):
    path = tmp_path / "g.csv"
    path.write_text(text)
    try:
        s = read_series(path)
    except DataError:
        return
    assert s.values.shape[0] >= 1 and s.values.shape[1] == len(s.columns)
    assert all(math.isfinite(v) for v in s.values[s.observed])


@pytest.mark.skipif(not (SHARED / "co2" / "co2.csv").exists(), reason="shared data not present")
def test_real_files():
    co2 = read_series(SHARED / "co2" / "co2.csv")
    assert co2.columns == ["co2"] and co2.date_column == "date" and len(co2) == 2284
    assert co2.report["missing"] == {"co2": 59}
    sun = read_series(SHARED / "sunspots" / "sunspots.csv")
    assert sun.columns == ["SUNACTIVITY"] and sun.dates[0] == "1700" and len(sun) == 309
    elec = read_series(SHARED / "ts_small" / "elec_equip.csv")
    assert elec.date_column == "DATE" and date_axis(elec.dates).dtype.kind == "M"
