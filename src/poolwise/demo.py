"""The main job: a short end-to-end run on embedded data, no download.

A synthetic EmoPain-like cohort is generated, cut into windows, and L-SFAN and the CNN-TAP
baseline are evaluated leave-one-subject-out (clean protocol), plus L-SFAN under the authors'
leaky reference protocol to show the gap; one report folder gets the Markdown report, the
tables, the plots and the Grad-CAM / attention explanations. Last, the image pools (CLS token,
GeM, GGeM) are compared on the embedded Fashion-MNIST subset with a tiny ViT over three seeds
(``vision/compare.md``). :func:`pain_summary` and :func:`vision_summary` give what the CLI prints
at the end: every number with its interval or paired verdict, and one line naming what is within
the noise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from poolwise.pain.data.readers import load_dataset
from poolwise.pain.data.synth import write_synthetic_cohort
from poolwise.pain.deploy.explain import explain_run, write_explanations
from poolwise.pain.loso.report import write_report
from poolwise.pain.loso.run import LosoConfig, run_loso
from poolwise.pain.train import TrainConfig
from poolwise.vision.compare import run_compare, write_compare_report
from poolwise.vision.train.presets import PRESETS
from poolwise.vision.train.spec import RunSpec

DEMO_RUNS = (("lsfan", "clean"), ("cnn_tap", "clean"), ("lsfan", "reference"))
DEMO_POOLS = ("token", "gem", "ggem")
DEMO_VIT = {"img_size": 28, **PRESETS["tiny28"]}  # the tiny28 preset of `poolwise vision`


def run_demo(
    out: str | Path,
    *,
    subjects: int = 10,
    epochs: int = 3,
    seed: int = 0,
    image_epochs: int = 2,
    image_seeds: int = 3,
    on_stage: Callable[[str], None] | None = None,
    on_fold: Callable[[dict, bool], None] | None = None,
    on_cell: Callable[[str, int, dict], None] | None = None,
) -> tuple[Path, Path]:
    """Runs every stage (each resumable); returns the paths of the pain report and of the
    image pooling comparison."""
    out = Path(out)
    say = on_stage or (lambda text: None)
    raw = out / "cohort"
    if not (raw / "poolwise_windows.npz").is_file():
        say(f"synthetic cohort of {subjects} subjects -> {raw}")
        write_synthetic_cohort(raw, n_subjects=subjects, seed=seed)
    dataset = load_dataset(raw)
    for model, protocol in DEMO_RUNS:
        say(f"LOSO {model}, {protocol} protocol, {epochs} epochs")
        config = LosoConfig(
            model,
            protocol=protocol,
            train=TrainConfig(epochs=epochs),
            seed=seed,
            n_select_subjects=min(3, max(1, (subjects - 1) // 3)),
        )
        run_loso(dataset, out / "runs" / f"{model}-{protocol}", config, on_fold=on_fold)
    say("explanations of L-SFAN (Grad-CAM, attention)")
    write_explanations(explain_run(out / "runs" / "lsfan-clean", dataset), out / "explain")
    command = (f"poolwise demo --out {out} --subjects {subjects} --epochs {epochs} --seed {seed}"
               f" --image-epochs {image_epochs} --image-seeds {image_seeds}")
    pain_report = write_report([out / "runs"], out, command=command)

    say(f"image pools {', '.join(DEMO_POOLS)} x {image_seeds} seeds on the embedded "
        f"Fashion-MNIST subset, tiny ViT, {image_epochs} epochs")
    base = RunSpec(model="vit_tiny_patch16_224", model_kwargs=DEMO_VIT, data="embedded",
                   epochs=image_epochs, batch_size=128, lr=1e-3, p_lr_mult=10.0)
    seeds = [seed + i for i in range(image_seeds)]
    results = run_compare(out / "vision", base, DEMO_POOLS, seeds, on_cell=on_cell)
    return pain_report, write_compare_report(out / "vision", results, command)


def _interval(entry: dict) -> str:
    low, high = entry["ci"]
    return f"{entry['estimate']:.3f} ({low:.3f} to {high:.3f})"


def _noise_line(within: list[str]) -> list[str]:
    if not within:
        return ["every difference above is larger than its noise (p < 0.05)"]
    return [f"within the noise (no evidence of a difference, p >= 0.05): {'; '.join(within)}"]


def pain_summary(report_dir: str | Path) -> list[str]:
    """The demo's LOSO findings as Markdown lines, from a pain report folder: pooled metrics with
    their 95 % subject-bootstrap intervals, the paired comparisons over subjects, the leak's gap
    with both intervals, and one line naming the differences that are within the noise."""
    report_dir = Path(report_dir)
    summaries = json.loads((report_dir / "summary.json").read_text())
    lines = ["| run | pooled macro F1 (95 % interval) | MCC (95 % interval) "
             "| ROC-AUC (95 % interval) |", "|---|---|---|---|"]
    for s in summaries:
        ci = s["pooled_ci"]
        lines.append(f"| {s['label']} | {_interval(ci['macro_f1'])} | {_interval(ci['mcc'])} "
                     f"| {_interval(ci['roc_auc'])} |")
    lines.append("")
    comparisons_file = report_dir / "comparisons.json"
    comparisons = json.loads(comparisons_file.read_text()) if comparisons_file.is_file() else []
    names = {"macro_f1": "macro F1", "mcc": "MCC", "roc_auc": "ROC-AUC"}
    lines += [f"- {names.get(c['metric'], c['metric'])}: {c['text']}" for c in comparisons]
    by_run = {(s["model"], s["protocol"]): s for s in summaries}
    for model in sorted({m for m, _ in by_run}):
        clean, leaky = by_run.get((model, "clean")), by_run.get((model, "reference"))
        if clean is None or leaky is None:
            continue
        a, b = clean["pooled_ci"]["macro_f1"], leaky["pooled_ci"]["macro_f1"]
        apart = a["ci"][1] < b["ci"][0] or b["ci"][1] < a["ci"][0]
        lines.append(f"- the leak: {model}'s pooled macro F1 is {_interval(b)} under the authors' "
                     f"leaky protocol and {_interval(a)} under the clean one; the intervals "
                     f"{'do not overlap' if apart else 'overlap: the gap is within the noise'}")
    pairs: dict[str, list[str]] = {}
    for c in comparisons:
        if c["p_value"] is None or not c["p_value"] < 0.05:
            pairs.setdefault(" vs ".join(c["names"]), []).append(names.get(c["metric"],
                                                                           c["metric"]))
    return lines + _noise_line([f"{pair} on {', '.join(m)}" for pair, m in pairs.items()])


def vision_summary(compare_dir: str | Path) -> list[str]:
    """The demo's pool comparison as Markdown lines, from a ``vision compare`` folder: the table
    (mean ± std over seeds), GGeM's paired verdicts against every other pool, and one line naming
    the differences that are within the noise."""
    compare_dir = Path(compare_dir)
    text = (compare_dir / "compare.md").read_text()
    lines = [*text[text.index("| pool"):text.index("## Verdict")].strip().splitlines(), ""]
    verdicts = json.loads((compare_dir / "compare.json").read_text())["verdict"]
    found = [v for metric in verdicts.values() for v in metric]
    lines += [f"- {v['text']}" for v in found]
    within: dict[str, list[str]] = {}
    for v in found:
        if v["p_value"] is None or not v["p_value"] < 0.05:
            within.setdefault(v["text"].split(":")[0], []).append(v["names"][1])
    return lines + _noise_line([f"ggem vs {', '.join(others)} on {metric}"
                                for metric, others in within.items()])
