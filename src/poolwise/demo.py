"""The main job: a short end-to-end run on embedded data, no download.

A synthetic EmoPain-like cohort is generated, cut into windows, and L-SFAN and the CNN-TAP
baseline are evaluated leave-one-subject-out (clean protocol), plus L-SFAN under the authors'
leaky reference protocol to show the gap; one report folder gets the Markdown report, the
tables, the plots and the Grad-CAM / attention explanations. Last, the image pools (CLS token,
avg, max, GeM, GGeM) are compared on the embedded Fashion-MNIST subset with a tiny ViT
(``vision/compare.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from poolwise.pain.data.readers import load_dataset
from poolwise.pain.data.synth import write_synthetic_cohort
from poolwise.pain.explain import explain_run, write_explanations
from poolwise.pain.loso import LosoConfig, run_loso
from poolwise.pain.report import write_report
from poolwise.pain.train import TrainConfig
from poolwise.vision.compare import run_compare, write_compare_report
from poolwise.vision.presets import PRESETS
from poolwise.vision.train import RunSpec

DEMO_RUNS = (("lsfan", "clean"), ("cnn_tap", "clean"), ("lsfan", "reference"))
DEMO_POOLS = ("token", "avg", "max", "gem", "ggem")
DEMO_VIT = {"img_size": 28, **PRESETS["tiny28"]}  # the tiny28 preset of `poolwise vision`


def run_demo(
    out: str | Path,
    *,
    subjects: int = 10,
    epochs: int = 3,
    seed: int = 0,
    image_epochs: int = 4,
    image_seeds: int = 2,
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
