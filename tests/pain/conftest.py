"""Fixtures shared by the pain tests."""

import pytest
from _cohorts import small_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Six subjects (C01, C02, C03, P01, P02, P03 order of the cohort), 24 windows each."""
    return small_cohort(tmp_path_factory.mktemp("cohort"), n_subjects=6, seed=3,
                        per_subject=24)
