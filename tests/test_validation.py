"""Every committed GPU measurement, re-simulated with today's code (see reports/validation/)."""

import pytest

from sa_profiler.validation import resimulate, validation_csvs

CSVS = validation_csvs()


def test_there_is_validation_data():
    assert CSVS, "no validation CSV committed under reports/validation/"


@pytest.mark.parametrize("path", CSVS, ids=lambda p: p.name)
def test_simulation_within_published_tolerance(path):
    result = resimulate(path)
    assert len(result) > 100
    off = result[~result.within]
    assert off.empty, off[["key", "measured", "simulated", "rel_error"]].to_string()
    assert (result.backend == result.sim_backend).all()
