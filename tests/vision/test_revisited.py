"""The revisited Oxford/Paris protocol: metrics by hand, ground truth read without unpickling
code."""

import json
import pickle

import numpy as np
import pytest

from poolwise.cli import main
from poolwise.vision.retrieval.revisited import (
    average_precision,
    check_ground_truth,
    load_ground_truth,
    read_ground_truth_pickle,
    revisited_metrics,
)

GROUND_TRUTH = {
    "imlist": [f"db{i}" for i in range(6)],
    "qimlist": ["q0", "q1"],
    "gnd": [{"easy": [2], "hard": [4], "junk": [1], "bbx": [0, 0, 10.5, 20]},
            {"easy": [0, 5], "hard": [], "junk": []}],
}


def test_metrics_by_hand():
    # query 0 ranks the database 1, 2, 0, 4, 3, 5; query 1 ranks it 5, 1, 0, 2, 3, 4
    similarity = np.array([[4, 6, 5, 2, 3, 1], [3, 4, 2, 1, 0, 5]], dtype=np.float64)
    m = revisited_metrics(similarity, check_ground_truth(GROUND_TRUTH, "test"))
    # Easy. q0: junk 1 and hard 4 removed -> 2, 0, 3, 5: easy 2 first, AP 1.
    #       q1: 5, 1, 0, ...: positives at ranks 0 and 2: (1 + 1)/2 + (1/2 + 2/3)/2 = 1.5833 / 2
    assert m["easy"]["map"] == pytest.approx((1 + 1.58333 / 2) / 2, abs=1e-5)
    # Medium. q0: junk removed -> 2, 0, 4, 3, 5: ranks 0 and 2, AP 0.79167; q1 as above
    assert m["medium"]["map"] == pytest.approx(0.791667, abs=1e-5)
    # mP@5: q0 k' = min(5, 3) = 3, 2 of 3; q1 k' = 3, 2 of 3
    assert m["medium"]["mp@5"] == pytest.approx(2 / 3) and m["medium"]["mp@1"] == 1.0
    # Hard. q0: easy 2 and junk 1 removed -> 0, 4, 3, 5: rank 1, AP (0 + 1/2)/2 = 0.25,
    # mP@1 = 0, mP@5 with k' = 2 = 1/2; q1 has no hard image: left out, counted
    assert m["hard"]["map"] == pytest.approx(0.25)
    assert (m["hard"]["mp@1"], m["hard"]["mp@5"]) == (0.0, 0.5)
    assert (m["hard"]["queries"], m["hard"]["queries_without_positive"]) == (1, 1)


def test_average_precision_of_a_perfect_and_a_late_ranking():
    assert average_precision(np.array([0, 1, 2]), 3) == pytest.approx(1.0)
    # one positive of two found, at rank 3: p0 = 0/3, p1 = 1/4, so AP = (0 + 1/4) / 2 / 2
    assert average_precision(np.array([3]), 2) == pytest.approx(0.0625)


def test_json_ground_truth_round_trip_and_errors(tmp_path):
    path = tmp_path / "gnd.json"
    path.write_text(json.dumps(GROUND_TRUTH))
    assert load_ground_truth(path)["gnd"][0] == {"easy": [2], "hard": [4], "junk": [1],
                                                  "bbx": [0.0, 0.0, 10.5, 20.0]}
    bad = {**GROUND_TRUTH, "gnd": [{"easy": [9]}, {}]}
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"gnd\[0\]\.easy must list database indices in \[0, 6\)"):
        load_ground_truth(path)
    path.write_text(json.dumps({**GROUND_TRUTH, "gnd": [{"easy": [1], "junk": [1]}, {}]}))
    with pytest.raises(ValueError, match=r"gnd\[0\] puts image\(s\) \[1\] in two of"):
        load_ground_truth(path)
    with pytest.raises(ValueError, match="similarity has shape"):
        revisited_metrics(np.zeros((2, 5)), check_ground_truth(GROUND_TRUTH, "x"))


def test_the_public_pickle_form_converts_without_running_code(tmp_path, capsys):
    plain = tmp_path / "gnd_plain.pkl"
    plain.write_bytes(pickle.dumps(GROUND_TRUTH, protocol=2))
    out = tmp_path / "gnd.json"
    assert main(["vision", "convert-gnd", str(plain), "--out", str(out)]) == 0
    assert load_ground_truth(out) == read_ground_truth_pickle(plain)
    assert "2 queries, 6 database images" in capsys.readouterr().out

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "gnd_evil.pkl"
    evil.write_bytes(pickle.dumps({**GROUND_TRUTH, "x": Payload()}, protocol=2))
    with pytest.raises(ValueError, match=r"opcode GLOBAL at byte \d+ .* refused"):
        read_ground_truth_pickle(evil)
    assert main(["vision", "convert-gnd", str(evil), "--out", str(tmp_path / "e.json")]) == 2
    assert not marker.exists() and not (tmp_path / "e.json").exists()
    numpy_pickle = tmp_path / "gnd_numpy.pkl"
    numpy_pickle.write_bytes(pickle.dumps({"gnd": np.arange(3)}, protocol=4))
    with pytest.raises(ValueError, match="opcode STACK_GLOBAL"):
        read_ground_truth_pickle(numpy_pickle)
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"junk\.pkl: not a readable pickle"):
        read_ground_truth_pickle(tmp_path / "junk.pkl")
