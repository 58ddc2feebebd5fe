"""Fitting one pain model (:mod:`poolwise.pain.train`): model selection, early stopping, the
step budget and the settings it refuses."""

import numpy as np
import pytest
import torch

from poolwise.pain.train import TrainConfig, class_weights, fit, fit_new_model


def _windows(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, 16, generator=g), (torch.arange(n) % 3 == 0).long()


def _fit(config, on_batch=None, seed=0):
    X, y = _windows(60, 1)
    Xs, ys = _windows(20, 2)
    return fit_new_model("gru", {"n_channels": 6, "hidden": 8}, X, y, Xs, ys, config, seed,
                         on_batch=on_batch)


def test_class_weights_are_one_minus_frequency():
    assert class_weights(np.array([0, 0, 0, 1])).tolist() == [0.25, 0.75]


def test_the_selected_epoch_is_the_best_selection_score_and_its_weights_are_kept():
    model, result = _fit(TrainConfig(epochs=5, batch_size=16, online_augment=False))
    keys = [(r["select_macro_f1"], -r["select_loss"]) for r in result.history]
    assert len(result.history) == 5
    assert result.epoch_chosen == 1 + max(range(5), key=lambda i: keys[i])
    # the model is left in its chosen state, the last epoch's weights apart in final_state
    Xs, ys = _windows(20, 2)
    loss = torch.nn.CrossEntropyLoss(weight=torch.tensor(class_weights(
        _windows(60, 1)[1].numpy())))
    with torch.no_grad():
        chosen_loss = float(loss(model(Xs), ys))
    assert chosen_loss == pytest.approx(result.history[result.epoch_chosen - 1]["select_loss"],
                                        rel=1e-5)
    assert not model.training and set(result.final_state) == set(model.state_dict())


def test_early_stopping_ends_after_patience_epochs_without_improvement():
    _, long = _fit(TrainConfig(epochs=8, batch_size=16, lr=3e-2, online_augment=False))
    _, stopped = _fit(TrainConfig(epochs=8, batch_size=16, lr=3e-2, online_augment=False,
                                  patience=2))
    # the same run up to the stop: the history is a prefix of the long run's
    n = len(stopped.history)
    assert stopped.history == long.history[:n]
    best = max(range(n), key=lambda i: (long.history[i]["select_macro_f1"],
                                        -long.history[i]["select_loss"]))
    assert n == 8 or n == best + 1 + 2


def test_the_step_budget_adds_epochs_and_each_window_is_counted_once():
    seen = []
    _, result = _fit(TrainConfig(epochs=1, min_steps=10, batch_size=16), on_batch=seen.append)
    assert len(result.history) == 3  # 4 steps per epoch (60 windows), ceil(10 / 4) epochs
    assert seen == [16, 16, 16, 12] * 3


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"batch_size": 0}, {"lr": 0.0},
                                 {"min_steps": -1}, {"patience": 0}])
def test_bad_settings_are_refused_before_training(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        TrainConfig(**bad)


def test_one_class_in_training_is_refused_with_its_count():
    X, _ = _windows(10, 1)
    model = torch.nn.Linear(1, 2)
    with pytest.raises(ValueError, match="10 training windows hold only class 0"):
        fit(model, X, torch.zeros(10, dtype=torch.long), X, torch.zeros(10, dtype=torch.long),
            TrainConfig(), torch.Generator())
