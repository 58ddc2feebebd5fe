"""The evaluation protocols as objects: folds, checks before training, each fold's windows."""

import numpy as np
import pytest
from _cohorts import small_cohort

from poolwise.pain.augment import apply_zscore, fit_zscore
from poolwise.pain.loso.protocols import (
    PROTOCOLS,
    Challenge,
    Clean,
    Reference,
    make_protocol,
    protocol_type,
)
from poolwise.pain.loso.splits import (
    CHALLENGE_FOLD,
    choose_select_subjects,
    fold_seed,
    resolve_folds,
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return small_cohort(tmp_path_factory.mktemp("cohort"), n_subjects=6, seed=3,
                        per_subject=24)


def test_fold_seed_depends_on_seed_and_subject_only():
    assert fold_seed(0, "P01") == fold_seed(0, "P01")
    assert len({fold_seed(0, "P01"), fold_seed(1, "P01"), fold_seed(0, "P02")}) == 3


def test_resolve_folds():
    subjects = ["C01", "C02", "P01", "P02"]
    assert resolve_folds(subjects, None) == subjects
    assert resolve_folds(subjects, ["P02", "0", "1-2"]) == ["P02", "C01", "C02", "P01"]
    with pytest.raises(ValueError, match="neither a subject"):
        resolve_folds(subjects, ["X9"])
    with pytest.raises(ValueError, match="outside 0-3"):
        resolve_folds(subjects, ["2-7"])


def test_selection_subjects_come_from_training_and_span_groups(cohort):
    train = [s for s in cohort.subjects if s != "P01"]
    chosen = choose_select_subjects(cohort, train, 3, np.random.default_rng(0))
    assert len(chosen) == 3 and "P01" not in chosen and set(chosen) <= set(train)
    assert cohort.y[np.isin(cohort.subject, chosen)].sum() > 0


def test_the_registry_names_each_protocol_once_with_its_parameters():
    assert PROTOCOLS == ("clean", "reference", "challenge")
    assert [protocol_type(n).name for n in PROTOCOLS] == list(PROTOCOLS)
    assert make_protocol("clean", n_select_subjects=2, seed=5) == Clean(n_select=2, seed=5)
    assert make_protocol("reference", seed=5) == Reference(n_select=3, seed=5)
    split = {"train": ["a"], "validation": ["b"], "test": ["c"]}
    assert make_protocol("challenge", split=split) == Challenge(split=split)
    with pytest.raises(ValueError, match=r"protocol 'leaky' is not one of \('clean'"):
        protocol_type("leaky")
    with pytest.raises(ValueError, match="the challenge protocol, and only it, takes a split"):
        make_protocol("clean", split=split)
    with pytest.raises(ValueError, match="the challenge protocol, and only it, takes a split"):
        make_protocol("challenge")
    assert [protocol_type(n).note is None for n in PROTOCOLS] == [True, False, False]
    assert [protocol_type(n).independent_folds for n in PROTOCOLS] == [True, False, True]


def test_clean_folds_keep_the_held_out_subject_out_of_everything_fitted(cohort):
    protocol = Clean(n_select=2, seed=0)
    assert protocol.fold_names(cohort.subjects) == cohort.subjects
    assert protocol.fold_total(cohort.subjects) == len(cohort.subjects)
    assert protocol.prepare(cohort) is None
    for name in cohort.subjects:
        protocol.check_fold(cohort, name)
        fold = protocol.fold(cohort, name, fold_seed(0, name))
        assert fold.test_subjects == [name] and name not in fold.train_subjects
        assert name not in fold.val_subjects and set(fold.val_subjects) <= set(fold.train_subjects)
        fitting = sorted(set(fold.train_subjects) - set(fold.val_subjects))
        assert fold.normalisation["fitted_on"] == fitting
        mean, std = fit_zscore(cohort.X[np.isin(cohort.subject, fitting)])
        assert np.allclose(fold.normalisation["mean"], mean.tolist())
        test = cohort.subject == name
        np.testing.assert_array_equal(fold.X_test, apply_zscore(cohort.X[test], mean, std))
        np.testing.assert_array_equal(fold.test_index, np.flatnonzero(test))
        assert not fold.test_variant.any() and fold.samples_per_epoch is None


def test_clean_checks_refuse_too_few_subjects_before_training(cohort):
    with pytest.raises(ValueError, match="LOSO needs at least 7 subjects, the data has 6"):
        Clean(n_select=5).check(cohort)
    only_p01 = cohort.subset(~((cohort.y == 1) & (cohort.subject != "P01")))
    with pytest.raises(ValueError, match="fold C01: no choice of 1 selection subjects among 5"):
        Clean(n_select=1).check_fold(only_p01, "C01")  # P01 cannot both select and fit


def test_reference_folds_share_statistics_of_every_subject_the_leak(cohort):
    protocol = Reference(seed=1)
    assert protocol.shares_cnn and not protocol.independent_folds
    expanded = protocol.prepare(cohort)
    fold = protocol.fold(cohort, "P01", 0, expanded)
    assert fold.val_subjects == fold.test_subjects == ["P01"]
    assert fold.normalisation["fitted_on"] == "all subjects, augmented (leak)"
    np.testing.assert_array_equal(fold.X_select, fold.X_test)  # selects on the test subject
    assert fold.test_variant.max() > 0  # augmented copies are scored
    assert fold.samples_per_epoch == int(np.sum(cohort.subject != "P01"))
    again = protocol.fold(cohort, "P01", 0)  # prepared on demand gives the same windows
    np.testing.assert_array_equal(again.X_train, fold.X_train)


def test_challenge_has_one_fold_from_its_split(cohort):
    subjects = cohort.subjects
    split = {"train": subjects[:3], "validation": subjects[3:4], "test": subjects[4:]}
    protocol = Challenge(split=split)
    assert protocol.fold_names(subjects) == [CHALLENGE_FOLD]
    assert protocol.fold_total(subjects) == 1
    with pytest.raises(ValueError, match="one fold; --folds does not apply"):
        protocol.fold_names(subjects, ["0"])
    protocol.check(cohort)
    fold = protocol.fold(cohort, CHALLENGE_FOLD, 0)
    assert fold.test_subjects == subjects[4:] and fold.val_subjects == subjects[3:4]
    assert fold.normalisation["fitted_on"] == subjects[:3]
    with pytest.raises(ValueError, match="'nobody' is not in the data"):
        Challenge(split={**split, "test": ["nobody"]}).check(cohort)


def test_a_fold_whose_training_windows_lack_a_class_is_refused(cohort):
    only_p01 = cohort.subset(~((cohort.y == 1) & (cohort.subject != "P01")))
    for protocol in (Clean(n_select=1), Reference()):
        with pytest.raises(ValueError, match=r"fold P01: the other subjects have no window of "
                                             r"class 1 \('protective'\)"):
            protocol.check_fold(only_p01, "P01")
    split = {"train": ["C01", "C02"], "validation": ["P01"], "test": ["P02"]}
    with pytest.raises(ValueError, match="the split's training subjects have no window"):
        Challenge(split=split).check_fold(only_p01, CHALLENGE_FOLD)


def test_a_runs_fold_records_are_its_own_folds_only(tmp_path):
    from poolwise.pain.loso.folds import fold_records

    config = {"protocol": "clean", "data": {"subjects": ["C01", "P01", "P02"]}}
    for name in ("fold_P01.json", "fold_C01.json", "fold_C01.onnx.json", "fold_X9.json"):
        (tmp_path / name).write_text("{}")
    assert fold_records(tmp_path, config) == [tmp_path / "fold_C01.json",
                                              tmp_path / "fold_P01.json"]
    (tmp_path / "fold_challenge.json").write_text("{}")
    assert fold_records(tmp_path, {**config, "protocol": "challenge"}) == [
        tmp_path / "fold_challenge.json"]
