"""Training and scoring one fold, and the files that say it is finished.

:func:`run_fold` builds a fresh model (seeded per fold), takes the fold's windows from its
protocol (:mod:`poolwise.pain.loso.protocols`), trains with model selection on the selection
subjects, scores the test subjects once with the chosen state and writes two files atomically:
the weights ``fold_<name>.safetensors`` (a complete detector checkpoint, see
:mod:`poolwise.pain.deploy.detector`), then ``fold_<name>.json``, which records the weights'
sha256 and marks the fold as finished. :func:`finished_fold` accepts a fold only when both agree.

A fold record's ``test`` holds one entry per test window: its dataset index, label, subject,
exercise, augmentation copy and probability: the protective-class probability for two classes,
the K class probabilities for K > 2 (:func:`poolwise.pain.metrics.score` reads both).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from poolwise import __version__
from poolwise._io import read_safetensors, save_safetensors, write_bytes
from poolwise._machine import environment
from poolwise.pain.data.dataset import WindowDataset
from poolwise.pain.deploy.detector import DetectorConfig, choose_threshold, detector_bytes
from poolwise.pain.loso.config import LosoConfig
from poolwise.pain.loso.protocols import protocol_type
from poolwise.pain.loso.splits import FoldData, fold_seed
from poolwise.pain.metrics import score
from poolwise.pain.models import count_parameters, model_input_kwargs
from poolwise.pain.train import TrainConfig, class_probabilities, fit_new_model
from poolwise.runs import RunFolder


def model_kwargs(config: LosoConfig, dataset: WindowDataset) -> dict:
    """The constructor arguments of a run's model: fitted to the data's channels, window and
    classes, then the run's own ``model_kwargs`` (which win)."""
    return {**model_input_kwargs(config.model, len(dataset.channel_names), dataset.window),
            "n_classes": dataset.n_classes, **config.model_kwargs}


def fold_folder(run_dir: Path) -> RunFolder:
    """A LOSO run's folder: settings ``run.json``, one finished record ``fold_<name>.json``
    per fold."""
    return RunFolder(run_dir, what="LOSO run", records="fold_{name}.json", item="fold")


def fold_path(run_dir: Path, name: str) -> Path:
    return fold_folder(run_dir).record_path(name)


def fold_records(run_dir: Path, config: Mapping) -> list[Path]:
    """The record files present of the run's own folds (``fold_<name>.json`` for each fold of
    its protocol on its subjects), in fold order; other files in the folder, such as an
    exported ``fold_C01.onnx.json``, are never read as folds."""
    kind = protocol_type(config["protocol"])
    paths = [fold_path(run_dir, name) for name in kind.every_fold(config["data"]["subjects"])]
    return [p for p in paths if p.is_file()]


def chain_path(run_dir: Path, subject: str) -> Path:
    return run_dir / "reference_cnn_chain" / f"after_{subject}.safetensors"


def fold_data(dataset: WindowDataset, config: LosoConfig, name: str, seed: int,
              prepared: object = None) -> FoldData:
    """The windows of fold ``name`` under the run's protocol."""
    return config.evaluation.fold(dataset, name, seed, prepared)


def _chain_cnn(model: torch.nn.Module, dataset: WindowDataset, name: str,
               run_dir: Path) -> str | None:
    """Reference protocol: loads the CNN state the previous fold ended with (the leak)."""
    position = dataset.subjects.index(name)
    if not hasattr(model, "cnn") or position == 0:
        return None
    previous_subject = dataset.subjects[position - 1]
    previous = chain_path(run_dir, previous_subject)
    if not previous.is_file():
        raise ValueError(
            f"the reference protocol shares the CNN across folds in order: fold {name} needs "
            f"{previous}, written by fold {previous_subject}; run that first")
    model.cnn.load_state_dict({k[len("cnn."):]: v for k, v in read_safetensors(previous).items()})
    return previous_subject


def run_fold(
    dataset: WindowDataset,
    config: LosoConfig,
    name: str,
    run_dir: Path,
    prepared: object = None,
    on_epoch: Callable[[dict], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """Trains and scores one fold; writes its weights, then its JSON; returns the JSON
    content.

    Raises:
        FloatingPointError: when the trained model gives a non-finite probability (nothing
            of the fold is written).
    """
    seed = fold_seed(config.seed, name)
    kwargs = model_kwargs(config, dataset)
    protocol = config.evaluation
    data = fold_data(dataset, config, name, seed, prepared)
    train_config = config.train
    if data.samples_per_epoch is not None:
        train_config = TrainConfig(**{**train_config.to_dict(),
                                      "samples_per_epoch": data.samples_per_epoch,
                                      "online_augment": False})
    chained: list[str | None] = [None]

    def chain(model: torch.nn.Module) -> None:
        if protocol.shares_cnn:
            chained[0] = _chain_cnn(model, dataset, name, run_dir)

    X_select, y_select = torch.from_numpy(data.X_select), torch.from_numpy(data.y_select)
    model, result = fit_new_model(
        config.model, kwargs, torch.from_numpy(data.X_train),
        torch.from_numpy(data.y_train).long(), X_select, y_select.long(), train_config, seed,
        before_fit=chain, on_epoch=on_epoch, on_batch=on_batch)
    chained_from = chained[0]
    prob = class_probabilities(model, torch.from_numpy(data.X_test))
    select_prob = class_probabilities(model, X_select)
    for part, values in (("test", prob), ("selection", select_prob)):
        bad = ~np.isfinite(values).all(1)
        if bad.any():
            raise FloatingPointError(
                f"fold {name}: the trained {config.model} gives non-finite probabilities for "
                f"{int(bad.sum())} of {len(values)} {part} windows; nothing of this fold was "
                "written (lower --lr, or check the data with `poolwise pain windows`)")
    binary = dataset.n_classes == 2
    if binary:
        prob, select_prob = prob[:, 1], select_prob[:, 1]
        threshold = choose_threshold(data.y_select, select_prob)
    else:
        threshold = 0.5  # unused: K classes predict the argmax
    index, variant = data.test_index, data.test_variant
    labels = dataset.y[index]
    norm = data.normalisation
    detector = DetectorConfig(
        model=config.model, model_kwargs=kwargs, channel_names=dataset.channel_names,
        frame_rate=float(dataset.frame_rate), window=dataset.window, hop=int(dataset.step),
        mean=norm["mean"], std=norm["std"], threshold=threshold, class_names=dataset.class_names,
        provenance={"protocol": config.protocol, "test_subject": name, "seed": seed,
                    "poolwise_version": __version__},
    )
    weights = detector_bytes(detector, model.state_dict())
    weights_path = run_dir / f"fold_{name}.safetensors"
    groups = {s: str(dataset.group[dataset.subject == s][0]) for s in data.test_subjects}
    record = {
        "poolwise_version": __version__,
        "environment": environment(),
        "protocol": config.protocol,
        **({"protocol_note": protocol.note} if protocol.note is not None else {}),
        "model": config.model,
        "model_kwargs": kwargs,
        "n_parameters": count_parameters(model),
        "class_names": list(dataset.class_names),
        "test_subject": name,
        "test_group": groups[name] if name in groups else "several",
        "test_subjects": groups,
        "train_subjects": data.train_subjects,
        "val_subjects": data.val_subjects,
        "seed": seed,
        "run_seed": config.seed,
        "train_config": train_config.to_dict(),
        "n_train_windows": len(data.X_train),
        "epoch_chosen": result.epoch_chosen,
        "history": result.history,
        "class_weights": result.class_weights,
        "normalisation": {**norm, "channels": list(dataset.channel_names)},
        "cnn_chained_from": chained_from,
        "test": {
            "window_index": index.tolist(),
            "labels": labels.tolist(),
            "probabilities": prob.tolist(),
            "subject": dataset.subject[index].tolist(),
            "exercise": dataset.exercise[index].tolist(),
            "augmentation_variant": variant.tolist(),
        },
        "threshold": (
            {"value": threshold, "chosen_on": "val_subjects windows, best macro F1",
             "note": "metrics use 0.5; the threshold is for deployment"} if binary else
            {"value": None, "note": f"{dataset.n_classes} classes: the argmax is predicted"}),
        "metrics": score(labels, prob),
        "metrics_original_windows": score(labels[variant == 0], prob[variant == 0]),
    }
    write_bytes(weights_path, weights)
    files = {"weights": (weights_path, hashlib.sha256(weights).hexdigest())}
    if protocol.shares_cnn and hasattr(model, "cnn"):
        cnn_state = {k: v for k, v in result.final_state.items() if k.startswith("cnn.")}
        chain = chain_path(run_dir, name)
        save_safetensors(chain, cnn_state, {"model": config.model,
                                            "model_kwargs": json.dumps(kwargs)})
        files["cnn_chain"] = chain
    return fold_folder(run_dir).finish(name, record, files)  # last: the fold is finished


def finished_fold(run_dir: Path, name: str) -> tuple[dict | None, str | None]:
    """The record of a finished fold, or None and why the fold must be (re)done.

    A fold is finished when its JSON parses and every file it records (the weights, and for
    the reference protocol the CNN chain) exists with the recorded sha256.
    """
    return fold_folder(Path(run_dir)).finished(name, required=("weights",))
