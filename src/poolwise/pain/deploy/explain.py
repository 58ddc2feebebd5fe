"""Explanations of L-SFAN-family models: Grad-CAM over time x signal column, and attention.

- Grad-CAM (Selvaraju et al. 2017) at the CNN's last feature map A (B, K, T', S). The model
  pools only one axis (time for L-SFAN, sensors for CNN-SAP) and keeps the other as token
  features, so the gradient weights are averaged over the pooled axis only: for L-SFAN
  alpha_{k,s} = mean over t of d logit_protective / d A[k, t, s], map[t, s] = ReLU(sum_k
  alpha_{k,s} A[k, t, s]). (Averaging over both axes, the image recipe, cancels the per-sensor
  signs and gives all-zero maps on trained L-SFANs.) The map is resampled linearly from T' to
  the window's T frames. Each window's map keeps its scale
  (averages weigh confident windows more); plots normalise the averaged map to [0, 1].
- Attention: the first encoder layer's self-attention weights between the K CNN-channel tokens
  (averaged over heads), (B, K, K), rows = query token.

For a LOSO run, every fold's selected model explains its own held-out windows (normalised with
that fold's statistics; the original windows, not the reference protocol's augmented copies),
and the maps are averaged per true class and per subject group. Two-class models explain the
protective logit for every window (the published use); K-class models explain each window's
own true class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from poolwise._io import load_weights_into, read_json
from poolwise.pain.augment import apply_zscore
from poolwise.pain.data.dataset import BINARY_CLASSES, WindowDataset
from poolwise.pain.loso.folds import fold_records
from poolwise.pain.loso.run import data_fingerprint, finished_fold
from poolwise.pain.models import create_model


def _check_explainable(model: nn.Module) -> None:
    if not hasattr(model, "cnn") or not hasattr(model, "tokens"):
        raise ValueError(
            f"{type(model).__name__} has no CNN feature map to explain; Grad-CAM and attention "
            "maps are defined for the L-SFAN family (lsfan, lsfan_ggem, cnn_tap, cnn_sap)"
        )


def grad_cam(model: nn.Module, X: Tensor, target: int = 1, raw: bool = False) -> Tensor:
    """(B, channels, time) windows -> (B, time, channels) Grad-CAM maps for class ``target``.

    ``raw=True`` returns the map before the ReLU and the resampling, (B, T', S).
    """
    _check_explainable(model)
    model.eval()
    store: dict[str, Tensor] = {}

    def keep(module, inputs, output):
        output.retain_grad()
        store["fmap"] = output

    handle = model.cnn.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(X)
            logits[:, target].sum().backward()
    finally:
        handle.remove()
    fmap, grad = store["fmap"].detach(), store["fmap"].grad
    pooled_axis = 3 if getattr(model, "pool_axis", "time") == "sensor" else 2
    alpha = grad.mean(dim=pooled_axis, keepdim=True)
    cam = (alpha * fmap).sum(1, keepdim=True)  # (B, 1, T', S)
    model.zero_grad(set_to_none=True)
    if raw:
        return cam[:, 0]
    cam = nn.functional.interpolate(
        torch.relu(cam), size=(X.shape[2], X.shape[1]), mode="bilinear", align_corners=True
    )
    return cam[:, 0]


@torch.inference_mode()
def attention_weights(model: nn.Module, X: Tensor) -> Tensor:
    """(B, K, K) head-averaged attention of the first encoder layer between CNN channels."""
    _check_explainable(model)
    if getattr(model, "encoder", None) is None:
        raise ValueError("this model has no attention layer (the CNN-TAP/SAP ablations)")
    model.eval()
    tokens = model.tokens(X)
    layer = model.encoder.layers[0]
    if layer.norm_first:
        tokens = layer.norm1(tokens)
    _, weights = layer.self_attn(tokens, tokens, tokens, need_weights=True,
                                 average_attn_weights=True)
    return weights


def explain_run(run_dir: str | Path, dataset: WindowDataset, batch_size: int = 256) -> dict:
    """Grad-CAM and attention over every finished fold's held-out windows, averaged.

    Returns arrays keyed ``cam_<class>``, ``cam_<group>``, ``attention_<class>``,
    ``attention_<group>`` (two classes: ``non_protective``/``protective``; K classes: their
    names with spaces as underscores), with window counts ``n_<key>``, plus ``channel_names``
    and ``frame_rate``.
    """
    run_dir = Path(run_dir)
    config = read_json(run_dir / "run.json", "LOSO run")
    folds = fold_records(run_dir, config)
    if not folds:
        raise FileNotFoundError(f"{run_dir}: no finished fold (run poolwise pain loso first)")
    if config["data"]["fingerprint"] != data_fingerprint(dataset):
        raise ValueError(f"{run_dir}: the run was trained on other windows (fingerprint "
                         f"{config['data']['fingerprint']}, the given data's is "
                         f"{data_fingerprint(dataset)}); its test windows are not those of "
                         "the given data: pass the window file the run was made from")
    cams, attentions, labels, groups = [], [], [], []
    for path in folds:
        record, problem = finished_fold(run_dir, path.stem.removeprefix("fold_"))
        if record is None:
            raise ValueError(f"{problem}; rerun the LOSO command to redo that fold")
        weights = path.with_suffix(".safetensors")
        model = create_model(record["model"], **record["model_kwargs"])
        _check_explainable(model)
        load_weights_into(model, weights, "fold model")
        norm = record["normalisation"]
        if norm["channels"] != list(dataset.channel_names):
            raise ValueError(f"{path}: trained on other channels than the given data")
        test = record["test"]
        variant = np.asarray(test.get("augmentation_variant", [0] * len(test["labels"])))
        index = np.asarray(test["window_index"], np.int64)[variant == 0]
        if index.max(initial=-1) >= len(dataset) or not np.array_equal(
                dataset.y[index], np.asarray(test["labels"])[variant == 0]):
            raise ValueError(f"{path}: its test windows are not those of the given data (run "
                             "explain with the window file the run was trained on)")
        X = apply_zscore(dataset.X[index], np.asarray(norm["mean"], np.float32),
                         np.asarray(norm["std"], np.float32))
        y = dataset.y[index]
        binary = len(record.get("class_names", BINARY_CLASSES)) == 2
        for i in range(0, len(X), batch_size):
            x = torch.from_numpy(X[i : i + batch_size])
            if binary:
                cams.append(grad_cam(model, x).numpy())
            else:  # each window's own class
                part = y[i : i + batch_size]
                cam = np.zeros((len(x), x.shape[2], x.shape[1]), np.float32)
                for k in np.unique(part):
                    cam[part == k] = grad_cam(model, x[part == k], target=int(k)).numpy()
                cams.append(cam)
            if model.encoder is not None:
                attentions.append(attention_weights(model, x).numpy())
        labels.append(y)
        groups.append(dataset.group[index])
    cam = np.concatenate(cams)
    attention = np.concatenate(attentions) if attentions else None
    y, group = np.concatenate(labels), np.concatenate(groups)
    out: dict[str, np.ndarray] = {
        "channel_names": np.array(dataset.channel_names),
        "frame_rate": np.array(dataset.frame_rate),
    }
    names = (["non_protective", "protective"] if dataset.class_names == BINARY_CLASSES
             else [c.replace(" ", "_") for c in dataset.class_names])
    selections = {name: y == k for k, name in enumerate(names)}
    selections |= {str(g): group == g for g in sorted(set(group.tolist()))}
    for key, mask in selections.items():
        out[f"n_{key}"] = np.array(int(mask.sum()))
        if mask.any():
            out[f"cam_{key}"] = cam[mask].mean(0)
            if attention is not None:
                out[f"attention_{key}"] = attention[mask].mean(0)
    return out


def write_explanations(arrays: dict, out: str | Path) -> list[Path]:
    """Writes ``explanations.npz`` and heat maps (Grad-CAM, attention; PNG and SVG) into
    ``out``."""
    from poolwise._figures import figure, save_figure
    from poolwise._io import atomic_path

    out = Path(out)
    written = []
    with atomic_path(out / "explanations.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    written.append(out / "explanations.npz")
    names = [str(c) for c in arrays["channel_names"]]
    keys = [k[len("cam_") :] for k in arrays if k.startswith("cam_")]
    fig = figure((3.4 * len(keys), 4.6))
    axes = fig.subplots(1, len(keys), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        cam = arrays[f"cam_{key}"]
        seconds = cam.shape[0] / float(arrays["frame_rate"])
        image = ax.imshow(cam / max(cam.max(), 1e-12), aspect="auto", cmap="magma", vmin=0,
                          vmax=1, extent=(-0.5, len(names) - 0.5, seconds, 0))
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=5)
        ax.set_xlabel("signal column", fontsize=7)
        ax.set_title(f"Grad-CAM, {key} (n={int(arrays[f'n_{key}'])})", fontsize=8)
        ax.set_ylabel("time in window (s)", fontsize=7)
        bar = fig.colorbar(image, ax=ax, fraction=0.046)
        bar.set_label("Grad-CAM / its maximum in this panel", fontsize=6)
        bar.ax.tick_params(labelsize=6)
    fig.suptitle("mean Grad-CAM of the protective logit over the windows of each group; each "
                 "panel divided by its own maximum", fontsize=7)
    fig.tight_layout()
    written += [out / name for name in save_figure(fig, out / "gradcam.png")]
    keys = [k[len("attention_") :] for k in arrays if k.startswith("attention_")]
    if keys:
        from matplotlib.colors import TwoSlopeNorm

        maps = [arrays[f"attention_{key}"] for key in keys]
        uniform = 1.0 / maps[0].shape[-1]
        low, high = min(float(m.min()) for m in maps), max(float(m.max()) for m in maps)
        spread = max(high - uniform, uniform - low, 1e-6)
        norm = TwoSlopeNorm(vcenter=uniform, vmin=uniform - spread, vmax=uniform + spread)
        fig = figure((3.0 * len(keys) + 1.0, 3.2), layout="constrained")
        axes = fig.subplots(1, len(keys), squeeze=False)
        for ax, key, attention in zip(axes[0], keys, maps, strict=True):
            image = ax.imshow(attention, cmap="RdBu_r", norm=norm)
            ax.set_title(f"attention, {key}", fontsize=8)
            ax.set_xlabel("key: CNN channel", fontsize=7)
            ax.set_ylabel("query: CNN channel", fontsize=7)
            ax.tick_params(labelsize=6)
        bar = fig.colorbar(image, ax=list(axes[0]), fraction=0.046)
        bar.ax.axhline(uniform, color="k", lw=1.0)
        bar.set_label(f"attention weight, one scale for all (line: uniform, "
                      f"1/{round(1 / uniform)})", fontsize=6)
        bar.ax.tick_params(labelsize=6)
        written += [out / name for name in save_figure(fig, out / "attention.png")]
    return written
