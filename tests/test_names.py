"""Names that print alike are one name to a reader: refused, with their exact spelling."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolwise._names import alike, check_distinct, printed


def test_what_prints_alike():
    assert printed(" P01\u200b ") == "P01"
    assert printed("ｃａｔ") == "cat"  # full-width letters
    assert printed("e\u0301") == printed("\u00e9")  # decomposed and composed é
    assert printed("two  words") == "two words"
    assert alike(["cat", "cat ", "dog", "cat"]) == [["cat", "cat "]]
    assert alike(["Cat", "cat"]) == []  # case prints differently
    with pytest.raises(ValueError, match=r"the windows: subject names that print alike but "
                                         r"differ \('P01' and 'P01 '\)"):
        check_distinct(["P01", "P02", "P01 "], "subject", "the windows")


@given(st.lists(st.text(max_size=6), max_size=8))
def test_names_in_no_group_print_distinctly(names):
    grouped = {n for group in alike(names) for n in group}
    rest = [n for n in dict.fromkeys(names) if n not in grouped]
    assert len({printed(n) for n in rest}) == len(rest)
    for group in alike(names):
        assert len({printed(n) for n in group}) == 1 and len(set(group)) == len(group) > 1


def test_subjects_classes_and_labels_that_print_alike_are_refused(tmp_path):
    from PIL import Image

    from poolwise.pain.data.dataset import WindowDataset
    from poolwise.pain.estimator import PainClassifier
    from poolwise.vision.data import load_image_folder

    X = np.zeros((4, 2, 8), np.float32)
    with pytest.raises(ValueError, match=r"subject names that print alike .*'S1' and 'S1\\u200b'"):
        WindowDataset(X=X, y=np.array([0, 1, 0, 1]), subject=["S1", "S1\u200b", "S2", "S2"],
                      group=["a"] * 4, exercise=["e"] * 4, channel_names=["c0", "c1"])
    with pytest.raises(ValueError, match=r"y: class label names that print alike"):
        PainClassifier(epochs=1).fit(np.random.default_rng(0).normal(size=(4, 2, 32)),
                                     np.array(["guard", "guard ", "rest", "rest"], dtype=object))
    for split, classes in (("train", ["cat", "dog"]), ("test", ["cat ", "dog"])):
        for name in classes:
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / name / "0.png")
    with pytest.raises(ValueError, match=r"\(train/ and test/\): class folder names that print "
                                         r"alike but differ \('cat' and 'cat '\)"):
        load_image_folder(tmp_path)
