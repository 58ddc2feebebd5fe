"""EmoPain data path: hand-made recordings with known windows and labels, formats, errors."""

import logging

import h5py
import numpy as np
import pytest
import scipy.io

from poolwise.cli import main
from poolwise.pain.data.dataset import WindowDataset
from poolwise.pain.data.layout import CHANNEL_NAMES, FameLayout
from poolwise.pain.data.readers import (
    DataError,
    load_dataset,
    read_challenge_file,
    read_fame_folder,
    read_fame_session,
)
from poolwise.pain.data.synth import write_synthetic_cohort
from poolwise.pain.data.windows import exercise_segments, fuse_raters, window_labels

LAYOUT = FameLayout()
EX = {name: LAYOUT.exercise_start + i for i, name in enumerate(LAYOUT.exercises)}


def recording() -> np.ndarray:
    """Frames 0-9 gap; 10-279 'bend' (270 frames: windows at 10, 55, 100); 280-379
    'reach_forward' (100 frames, shorter than a window); 380-679 'walking' (excluded).
    Raters 0 and 1 mark frames 145-234 of the bend (90 frames) as protective."""
    n = 680
    m = np.zeros((n, 160))
    m[:, list(LAYOUT.signals)] = np.arange(n)[:, None] + np.arange(30)[None] / 100
    m[:, list(LAYOUT.emg)] += 1.0  # a non-empty session
    m[10:280, EX["bend"]] = 1
    m[280:380, EX["reach_forward"]] = 1
    m[380:680, EX["walking"]] = 1
    m[145:235, 83 + 0 * 7 + 3] = 1  # rater 0, behaviour 3
    m[145:235, 83 + 1 * 7 + 5] = 2  # rater 1, behaviour 5
    m[400:500, 83 + 2 * 7 + 1] = 1  # a single rater: not protective
    return m


def save_mat(path, matrix, name="data"):
    scipy.io.savemat(path, {name: matrix})
    return path


def test_hand_made_recording_windows_and_labels(tmp_path):
    ds = read_fame_session(save_mat(tmp_path / "P07_1.mat", recording()), group="CLBP")
    # bend windows start at 10, 55, 100; protective frames 145-234:
    #  [10, 190): 45 frames -> 0;  [55, 235): 90 = exactly half -> 1;  [100, 280): 90 -> 1
    np.testing.assert_array_equal(ds.y, [0, 1, 1])
    assert ds.X.shape == (3, 30, 180) and ds.X.dtype == np.float32
    np.testing.assert_array_equal(ds.X[:, 0, 0], [10, 55, 100])  # column 0 = frame index
    np.testing.assert_allclose(ds.X[1, :, 5], 60 + np.arange(30) / 100 + np.r_[[0] * 26, [1] * 4])
    assert ds.exercise.tolist() == ["bend"] * 3
    assert ds.subject.tolist() == ["P07"] * 3 and ds.group.tolist() == ["CLBP"] * 3
    assert ds.channel_names == CHANNEL_NAMES


def test_rater_fusion_rules():
    ratings = np.zeros((4, 4, 7), dtype=np.int8)
    ratings[0, 0, 3] = 1  # one rater: no
    ratings[1, [0, 2], [1, 6]] = 1  # two raters, different behaviours: yes
    ratings[2, 3, 0] = 2  # one rater, value 2 on behaviour 0: the authors count it
    ratings[3, 1, 4] = 2  # one rater, value 2 elsewhere: no
    np.testing.assert_array_equal(fuse_raters(ratings), [False, True, True, False])
    strict = fuse_raters(ratings, single_rater_value2_behaviour0=False)
    np.testing.assert_array_equal(strict, [False, True, False, False])


def test_window_label_half_boundary():
    frames = np.zeros(8, dtype=bool)
    frames[:2] = True
    np.testing.assert_array_equal(window_labels(frames, np.array([0, 1, 2]), 4), [1, 0, 0])


def test_segments_of_adjacent_and_overlapping_exercises():
    ind = np.zeros((12, 2))
    ind[0:3, 0] = ind[3:7, 0] = 1  # one run of 7
    ind[5:12, 1] = 1
    np.testing.assert_array_equal(exercise_segments(ind), [[0, 7, 0], [5, 12, 1]])


def test_empty_session_is_skipped_recorded_and_logged(tmp_path, caplog):
    m = recording()
    m[0, list(LAYOUT.emg)] = 0
    with caplog.at_level(logging.WARNING):
        ds = read_fame_session(save_mat(tmp_path / "C01.mat", m))
    assert len(ds) == 0 and "C01.mat: empty session" in caplog.text
    (entry,) = ds.skipped
    assert entry["file"].endswith("C01.mat") and entry["frames"] == len(m)
    assert entry["reason"] == "empty session: first-row sEMG all zero"


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda m: m[:, :150], r"the matrix has 150 columns.*needs 160; column 150 \(energy_03\)"),
        (
            lambda m: m.__setitem__((slice(300, 310), 80), np.nan) or m,
            r"NaN/Inf in column 80 \(sEMG 2\) at frame 300 \(10 bad frames",
        ),
        (
            lambda m: m.__setitem__((20, 83 + 7 + 2), 3) or m,
            r"rater label 3 outside 0/1/2 in column 92 \(rater 1, behaviour 2\) at frame 20",
        ),
        (
            lambda m: m.__setitem__((5, EX["bend"]), 0.5) or m,
            r"exercise indicator 0.5 is not 0/1 in column \d+ \(exercise bend\)",
        ),
    ],
)
def test_bad_recordings_name_file_and_column(tmp_path, edit, match):
    path = save_mat(tmp_path / "P01.mat", edit(recording()))
    with pytest.raises(DataError, match=r"P01\.mat: " + match):
        read_fame_session(path)


def test_not_a_mat_file_and_ambiguous_matrices(tmp_path):
    bogus = tmp_path / "notes.mat"
    bogus.write_text("hello")
    with pytest.raises(DataError, match=r"notes\.mat: not a readable MATLAB"):
        read_fame_session(bogus)
    two = tmp_path / "two.mat"
    scipy.io.savemat(two, {"a": recording(), "b": recording()})
    with pytest.raises(DataError, match=r"two\.mat: expected one numeric matrix"):
        read_fame_session(two)


def test_variable_name_is_found_and_v73_hdf5_is_read(tmp_path):
    v5 = read_fame_session(save_mat(tmp_path / "P02.mat", recording(), name="S2_whatever"))
    h5 = tmp_path / "P02_v73.mat"
    with h5py.File(h5, "w") as f:
        f["x"] = recording().T  # MATLAB v7.3 stores column-major
    v73 = read_fame_session(h5, subject="P02")
    np.testing.assert_array_equal(v73.X, v5.X)
    np.testing.assert_array_equal(v73.y, v5.y)


def test_synthetic_cohort_round_trip(tmp_path):
    files = write_synthetic_cohort(tmp_path / "c", n_subjects=3, seed=7)
    assert [f.parent.name for f in files] == ["randomised C", "randomised P", "randomised P"]
    ds = read_fame_folder(tmp_path / "c")
    assert ds.subjects == ["C01", "P01", "P02"]
    assert set(ds.group[ds.subject == "C01"].tolist()) == {"healthy"}
    assert len(ds) > 200 and 0 < ds.y.mean() < 0.5  # protective is the minority
    assert not set(ds.exercise.tolist()) & {"walking", "sitting_still", "standing_still"}
    # the generator is seedable: same seed, same data; another seed, other data
    again = read_fame_folder(
        write_synthetic_cohort(tmp_path / "d", n_subjects=3, seed=7)[0].parents[1]
    )
    np.testing.assert_array_equal(again.X, ds.X)
    other = read_fame_folder(
        write_synthetic_cohort(tmp_path / "e", n_subjects=3, seed=8)[0].parents[1]
    )
    assert len(other) != len(ds) or not np.array_equal(other.X, ds.X)


def test_protective_windows_differ_as_in_people(tmp_path):
    write_synthetic_cohort(tmp_path / "c", n_subjects=6, seed=3)
    ds = read_fame_folder(tmp_path / "c")
    prot, free = ds.X[ds.y == 1], ds.X[ds.y == 0]
    emg = slice(26, 30)
    angles = slice(0, 13)
    # guarded movement: smaller joint range, higher back-muscle sEMG
    assert np.ptp(prot[:, angles], axis=2).mean() < np.ptp(free[:, angles], axis=2).mean()
    assert prot[:, emg].mean() > free[:, emg].mean()
    clbp = ds.group == "CLBP"
    assert ds.y[clbp].mean() > ds.y[~clbp].mean()


def test_dataset_file_round_trip_and_cache(tmp_path):
    write_synthetic_cohort(tmp_path / "c", n_subjects=2, seed=1)
    ds = load_dataset(tmp_path / "c")
    cached = tmp_path / "c" / "poolwise_windows.npz"
    assert cached.is_file()
    assert [p.name for p in (tmp_path / "c").iterdir() if p.name.startswith(".")] == []
    back = WindowDataset.load(cached)
    for name in ("X", "y", "subject", "group", "exercise"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ds, name))
    assert back.channel_names == CHANNEL_NAMES and back.step == 45
    other = load_dataset(tmp_path / "c", step=90)  # options bypass the cache
    assert len(other) < len(ds)


def test_challenge_csv_and_mat(tmp_path):
    frames = 360
    m = np.zeros((frames, 31))
    m[:, :30] = np.random.default_rng(0).normal(size=(frames, 30))
    m[180:, 30] = 1
    csv = tmp_path / "S03.csv"
    np.savetxt(csv, m, delimiter=",", header=",".join([*CHANNEL_NAMES, "label"]), comments="")
    ds = read_challenge_file(csv)
    # windows at 0, 45, ..., 180; protective frames from 180: >= 90 of them from start 90
    np.testing.assert_array_equal(ds.y, [0, 0, 1, 1, 1])
    np.testing.assert_allclose(ds.X[2], m[90:270, :30].T.astype(np.float32))
    mat = read_challenge_file(save_mat(tmp_path / "S03.mat", m))
    np.testing.assert_array_equal(mat.X, ds.X)
    m[7, 30] = 2
    np.savetxt(csv, m, delimiter=",")
    with pytest.raises(DataError, match=r"S03\.csv: label 2 outside 0/1 in column 30"):
        read_challenge_file(csv)


def test_synthetic_csv_sessions_hold_the_same_frames_and_labels(tmp_path):
    """--format csv writes the FAME sessions' 30 signals and the rater-fused frame label; the
    challenge reader reads them back, the stream reader finds every channel by name."""
    from poolwise.pain.data.fame import matrix_frame_labels
    from poolwise.pain.data.files import load_mat_matrix
    from poolwise.pain.data.layout import CHANNEL_NAMES, FameLayout
    from poolwise.pain.data.readers import read_challenge_folder
    from poolwise.pain.deploy.replay import iter_csv_frames

    mats = write_synthetic_cohort(tmp_path / "mat", n_subjects=2, seed=3)
    csvs = write_synthetic_cohort(tmp_path / "csv", n_subjects=2, seed=3, fmt="csv")
    assert [f.name for f in csvs] == ["C01.csv", "P01.csv"]
    matrix = load_mat_matrix(mats[1])
    layout = FameLayout()
    table = np.loadtxt(csvs[1], delimiter=",", skiprows=1)
    np.testing.assert_allclose(table[:, :30], matrix[:, list(layout.signals)], rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_array_equal(table[:, 30], matrix_frame_labels(matrix, layout))
    ds = read_challenge_folder(tmp_path / "csv")
    assert ds.subjects == ["C01", "P01"] and 0 < ds.y.mean() < 0.5
    with open(csvs[0], newline="") as f:
        frames = np.concatenate([c for c, _ in iter_csv_frames(f, CHANNEL_NAMES, chunk=500)])
    np.testing.assert_allclose(frames, np.loadtxt(csvs[0], delimiter=",", skiprows=1)[:, :30],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="fmt='npz' is not one of"):
        write_synthetic_cohort(tmp_path / "x", n_subjects=1, fmt="npz")


def test_cli_synth_then_windows(tmp_path, capsys):
    assert main(["pain", "synth", str(tmp_path / "c"), "--subjects", "2", "--seed", "4"]) == 0
    out = tmp_path / "w.npz"
    assert main(["pain", "windows", str(tmp_path / "c"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "wrote 2 sessions" in printed and "| healthy | 1 |" in printed
    assert "| excluded exercise |" in printed  # walking etc.: left out, and said so
    assert len(WindowDataset.load(out)) > 0
    assert main(["pain", "windows", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "missing: no such" in capsys.readouterr().err
