"""StreamingDetector: offline equivalence, any chunk size, gaps/NaN policy, per-frame labels,
and `poolwise pain stream` on CSV, stdin and a FAME .mat session."""

import io
import subprocess
import sys

import numpy as np
import pytest
import scipy.io

from poolwise.cli import main
from poolwise.pain.data.layout import CHANNEL_NAMES, FameLayout
from poolwise.pain.deploy.detector import Detector, DetectorConfig, save_detector
from poolwise.pain.deploy.replay import iter_csv_frames
from poolwise.pain.deploy.streaming import Decision, StreamingDetector, frame_labels
from poolwise.pain.models import create_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    config = DetectorConfig(model="lsfan", model_kwargs={}, channel_names=CHANNEL_NAMES,
                            frame_rate=60.0, window=180, hop=45, mean=[0.5] * 30,
                            std=[2.0] * 30, threshold=0.45)
    path = tmp_path_factory.mktemp("det") / "fold_P01.safetensors"
    return save_detector(path, config, create_model("lsfan").state_dict())


def recording(n=700, seed=0):
    return np.random.default_rng(seed).normal(0.5, 2.0, (n, 30)).astype(np.float32)


def offline(detector, rec):
    starts = np.arange(0, len(rec) - 180 + 1, 45)
    return starts, detector.predict_proba(np.stack([rec[s:s + 180].T for s in starts]))


@pytest.mark.parametrize("chunks", [[1], [45], [7, 200, 13], [700]])
def test_stream_equals_offline_windows_for_any_chunking(checkpoint, chunks):
    detector = Detector.load(checkpoint)
    rec = recording()
    starts, expected = offline(detector, rec)
    stream = StreamingDetector(detector)
    decisions, i, k = [], 0, 0
    while i < len(rec):
        size = chunks[k % len(chunks)]
        decisions += stream.push(rec[i:i + size])
        i, k = i + size, k + 1
    assert [d.start for d in decisions] == starts.tolist()
    assert all(d.end - d.start == 180 and d.status == "ok" for d in decisions)
    np.testing.assert_allclose([d.probability for d in decisions], expected, atol=1e-6)
    assert [d.label for d in decisions] == (expected >= 0.45).astype(int).tolist()
    assert decisions[0].time_s == pytest.approx(3.0)


def test_missing_values_are_filled_or_make_the_decision_unavailable(checkpoint):
    detector = Detector.load(checkpoint)
    rec = recording(360)
    rec[100:110, 3] = np.nan  # 10 frames of one channel: under 10 % of a window
    rec[200:260, 29] = np.nan  # emg_3 drops out for a second
    decisions = StreamingDetector(detector).push(rec)
    by_start = {d.start: d for d in decisions}
    assert by_start[0].status == "filled" and "10 values interpolated" in by_start[0].detail
    filled = rec[0:180].T.copy()
    filled[3, 100:110] = np.interp(np.arange(100, 110), [99, 110], filled[3, [99, 110]])
    assert by_start[0].probability == pytest.approx(detector.predict_proba(filled[None])[0],
                                                    abs=1e-6)
    unavailable = by_start[135]
    assert unavailable.probability is None and unavailable.label is None
    assert unavailable.status == "missing" and "emg_3 (33%)" in unavailable.detail


def test_timestamp_gaps_become_missing_frames_and_long_gaps_reset(checkpoint):
    detector = Detector.load(checkpoint)
    rec = recording(400)
    times = np.arange(400) / 60.0
    times[300:] += 1.0  # a one-second gap (60 frames) after frame 299
    stream = StreamingDetector(detector)
    decisions = stream.push(rec, times)
    assert stream.frames == 460
    assert [d.start for d in decisions if d.status == "ok"] == [0, 45, 90]
    assert any(d.status == "missing" for d in decisions)
    long_gap = StreamingDetector(detector)
    first = long_gap.push(rec[:200], times[:200])
    assert len(first) == 1
    after = long_gap.push(rec[200:400], times[:200] + 200 / 60 + 10.0)  # 10 s gap
    assert long_gap.filled == 200
    assert all(d.status == "ok" for d in after) and all(d.start >= 200 + 600 for d in after)
    with pytest.raises(ValueError, match="timestamps must increase"):
        long_gap.push(rec[:2], [0.0, 0.0])
    with pytest.raises(ValueError, match=r"frames must be \(n, 30\)"):
        long_gap.push(rec[:, :29])


def test_frame_labels_average_overlapping_windows():
    decisions = [Decision(0, 4, 0.0, 0.2, 0, "ok"), Decision(2, 6, 0.0, 0.8, 1, "ok"),
                 Decision(4, 8, 0.0, None, None, "missing")]
    prob, labels = frame_labels(decisions, 9, threshold=0.5)
    np.testing.assert_allclose(prob[:6], [0.2, 0.2, 0.5, 0.5, 0.8, 0.8])
    assert np.isnan(prob[6:]).all()
    assert labels.tolist() == [0, 0, 1, 1, 1, 1, -1, -1, -1]


def _csv(rec, names=CHANNEL_NAMES, time=True):
    lines = [",".join((["time"] if time else []) + list(names))]
    for i, row in enumerate(rec):
        cells = ["" if np.isnan(v) else f"{v:.6f}" for v in row]
        lines.append(",".join(([f"{i / 60:.6f}"] if time else []) + cells))
    return "\n".join(lines) + "\n"


def test_csv_reader_names_the_missing_column_and_bad_cell():
    with pytest.raises(ValueError, match=r"x\.csv: no column for channel\(s\) emg_3"):
        list(iter_csv_frames(io.StringIO(_csv(recording(3)[:, :29], CHANNEL_NAMES[:29])),
                             CHANNEL_NAMES, name="x.csv"))
    text = _csv(recording(3)).replace("\n0.016667,", "\n0.016667,abc,", 1)
    with pytest.raises(ValueError, match="row 3"):
        list(iter_csv_frames(io.StringIO(text), CHANNEL_NAMES))
    backwards = _csv(recording(4)).replace("\n0.050000,", "\n0.010000,", 1)  # row 5 at 0.01 s
    with pytest.raises(ValueError, match=r"x\.csv: row 5 has time 0\.01, not after row 4's "
                                         r"0\.033333; the time column must increase"):
        list(iter_csv_frames(io.StringIO(backwards), CHANNEL_NAMES, name="x.csv", chunk=1))


def test_stream_cli_on_csv_stdin_and_mat(checkpoint, tmp_path, capsys):
    detector = Detector.load(checkpoint)
    rec = recording(400)
    _, expected = offline(detector, rec)
    (tmp_path / "rec.csv").write_text(_csv(rec))
    out = tmp_path / "out"
    assert main(["pain", "stream", str(checkpoint), "--input", str(tmp_path / "rec.csv"),
                 "--out", str(out), "--chunk", "17"]) == 0
    printed = capsys.readouterr().out
    assert f"# {len(expected)} decisions over 400 frames" in printed
    rows = (out / "decisions.csv").read_text().splitlines()[1:]
    np.testing.assert_allclose([float(r.split(",")[3]) for r in rows], expected, atol=1e-5)
    assert len((out / "frames.csv").read_text().splitlines()) == 401
    assert (out / "stream.png").stat().st_size > 0

    done = subprocess.run([sys.executable, "-m", "poolwise", "pain", "stream", str(checkpoint),
                           "--input", "-"], input=_csv(rec, time=False), text=True,
                          capture_output=True, check=True)
    assert f"# {len(expected)} decisions" in done.stdout

    matrix = np.zeros((400, 160))
    matrix[:, list(FameLayout().signals)] = rec
    scipy.io.savemat(tmp_path / "session.mat", {"data": matrix})
    session = str(tmp_path / "session.mat")
    assert main(["pain", "stream", str(checkpoint), "--input", session]) == 0
    assert f"# {len(expected)} decisions" in capsys.readouterr().out

    assert main(["pain", "stream", str(checkpoint), "--input", str(tmp_path / "rec.csv"),
                 "--frame-rate", "50"]) == 2
    assert "sampled at 50 Hz, the detector expects 60 Hz" in capsys.readouterr().err
