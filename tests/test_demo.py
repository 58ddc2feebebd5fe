"""What the demo prints: intervals with every number, verdicts, and one line on the noise."""

from __future__ import annotations

import json

from poolwise.demo import pain_summary, vision_summary


def _ci(estimate, low, high):
    return {"estimate": estimate, "ci": [low, high], "confidence": 0.95}


def _run(model, protocol, label, f1):
    return {"model": model, "protocol": protocol, "label": label,
            "pooled_ci": {"macro_f1": _ci(*f1), "mcc": _ci(0.3, 0.1, 0.5),
                          "roc_auc": _ci(0.8, 0.7, 0.9)}}


def _comparison(metric, p_value):
    return {"names": ["cnn_tap [clean]", "lsfan [clean]"], "metric": metric, "p_value": p_value,
            "text": f"cnn_tap [clean] − lsfan [clean] = 0.1 (p = {p_value})"}


def test_pain_summary_gives_intervals_the_leak_and_the_noise(tmp_path):
    runs = [_run("cnn_tap", "clean", "cnn_tap [clean]", (0.7, 0.5, 0.8)),
            _run("lsfan", "clean", "lsfan [clean]", (0.64, 0.47, 0.83)),
            _run("lsfan", "reference", "lsfan [REFERENCE (leaky)]", (0.92, 0.84, 0.95))]
    (tmp_path / "summary.json").write_text(json.dumps(runs))
    comparisons = [_comparison("macro_f1", 0.38), _comparison("mcc", 0.01)]
    (tmp_path / "comparisons.json").write_text(json.dumps(comparisons))
    lines = pain_summary(tmp_path)
    assert lines[2] == "| cnn_tap [clean] | 0.700 (0.500 to 0.800) | 0.300 (0.100 to 0.500) " \
        "| 0.800 (0.700 to 0.900) |"
    assert "- macro F1: cnn_tap [clean] − lsfan [clean] = 0.1 (p = 0.38)" in lines
    assert ("- the leak: lsfan's pooled macro F1 is 0.920 (0.840 to 0.950) under the authors' "
            "leaky protocol and 0.640 (0.470 to 0.830) under the clean one; the intervals do "
            "not overlap") in lines
    assert lines[-1] == ("within the noise (no evidence of a difference, p >= 0.05): "
                         "cnn_tap [clean] vs lsfan [clean] on macro F1")


def test_pain_summary_says_when_the_leak_is_within_the_noise(tmp_path):
    runs = [_run("lsfan", "clean", "lsfan [clean]", (0.64, 0.47, 0.86)),
            _run("lsfan", "reference", "lsfan [REFERENCE (leaky)]", (0.70, 0.85, 0.95))]
    (tmp_path / "summary.json").write_text(json.dumps(runs))
    lines = pain_summary(tmp_path)  # no comparisons.json: one run per protocol
    assert lines[-2].endswith("the intervals overlap: the gap is within the noise")
    assert lines[-1] == "every difference above is larger than its noise (p < 0.05)"


def test_vision_summary_groups_the_noise_by_metric(tmp_path):
    (tmp_path / "compare.md").write_text(
        "# Pooling comparison\n\n| pool | seeds |\n|---|---|\n| ggem | 3 |\n\n## Verdict\n")

    def verdict(metric, other, p_value):
        return {"names": ["ggem", other], "p_value": p_value,
                "text": f"{metric}: ggem − {other} = +1 (p = {p_value})"}

    found = {"accuracy": [verdict("top-1 accuracy (%)", "token", 0.3),
                          verdict("top-1 accuracy (%)", "avg", 0.01)],
             "map@r": [verdict("mAP@R (%)", "token", 0.5), verdict("mAP@R (%)", "gem", None)]}
    (tmp_path / "compare.json").write_text(json.dumps({"verdict": found}))
    lines = vision_summary(tmp_path)
    assert lines[:3] == ["| pool | seeds |", "|---|---|", "| ggem | 3 |"]
    assert "- top-1 accuracy (%): ggem − avg = +1 (p = 0.01)" in lines
    assert lines[-1] == ("within the noise (no evidence of a difference, p >= 0.05): ggem vs "
                         "token on top-1 accuracy (%); ggem vs token, gem on mAP@R (%)")
