"""The one optimisation loop (:mod:`poolwise.runs.loop`): its steps against hand-written
ones, accumulation, resume, and model selection."""

import pytest
import torch
from torch import nn

from poolwise.runs.loop import KeepBest, StepLoop


def _data(n=24, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, 3, (n,), generator=g)


def _model(seed=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


def _batches(x, y, size):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]


def _loss(net, batch):
    xb, yb = batch
    return nn.functional.cross_entropy(net(xb), yb), len(yb)


def test_a_plain_step_is_the_hand_written_one_bit_for_bit():
    x, y = _data()
    by_hand, looped = _model(), _model()
    opt = torch.optim.Adam(by_hand.parameters(), lr=1e-2)
    for _ in range(3):
        total = 0.0
        for xb, yb in _batches(x, y, 5):
            loss = nn.functional.cross_entropy(by_hand(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(yb)
    loop = StepLoop(looped, torch.optim.Adam(looped.parameters(), lr=1e-2))
    seen = []
    for _ in range(3):
        mean = loop.train_one_epoch(looped, _batches(x, y, 5), 5, _loss,
                                    on_batch=lambda s, n: seen.append((s, n)))
    for a, b in zip(by_hand.parameters(), looped.parameters(), strict=True):
        assert torch.equal(a, b)
    assert loop.updates == 15 and seen[:5] == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    assert mean == total / 24  # the last epoch's mean loss per sample (a short last batch)


def test_accumulated_batches_take_the_step_of_their_union():
    """Mean losses of k equal batches, each divided by k: the gradient of the mean over the
    union, so SGD's step matches one batch of all of them (up to rounding)."""
    x, y = _data(n=12)
    whole, accumulated = _model(), _model()
    one = StepLoop(whole, torch.optim.SGD(whole.parameters(), lr=0.5))
    one.train_one_epoch(whole, [(x, y)], 1, _loss)
    acc = StepLoop(accumulated, torch.optim.SGD(accumulated.parameters(), lr=0.5),
                   accum_steps=3)
    steps = []
    acc.train_one_epoch(accumulated, _batches(x, y, 4), 3, _loss,
                        on_batch=lambda s, n: steps.append((s, n)))
    assert acc.updates == 1 and steps == [(1, 1)]
    for a, b in zip(whole.parameters(), accumulated.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_a_short_last_step_divides_by_its_own_batch_count():
    """5 batches with accum_steps 2: steps of 2, 2 and 1 batches; the last is one batch's
    mean, not half of it."""
    x, y = _data(n=10)
    model = _model()
    loop = StepLoop(model, torch.optim.SGD(model.parameters(), lr=0.1), accum_steps=2)
    batches = _batches(x, y, 2)
    before = [q.detach().clone() for q in model.parameters()]
    grads = []
    loop.train_one_epoch(model, batches, 5, _loss, after_step=lambda: grads.append(
        [q.detach().clone() for q in model.parameters()]))
    assert loop.updates == 3
    # replay: the third step's update equals lr x the gradient of the last batch alone
    replay = _model()
    with torch.no_grad():
        for q, v in zip(replay.parameters(), grads[1], strict=True):
            q.copy_(v)
    loss, _ = _loss(replay, batches[4])
    loss.backward()
    for q, after, g_before in zip(replay.parameters(), grads[2], grads[1], strict=True):
        torch.testing.assert_close(g_before - 0.1 * q.grad, after, rtol=1e-6, atol=1e-7)
    assert not all(torch.equal(a, b) for a, b in zip(before, grads[2], strict=True))


def test_resuming_from_the_state_dict_ends_with_the_same_weights():
    x, y = _data()
    straight = _model()
    loop = StepLoop(straight, torch.optim.AdamW(straight.parameters(), lr=1e-2),
                    clip_grad=0.5)
    for _ in range(4):
        loop.train_one_epoch(straight, _batches(x, y, 6), 4, _loss)
    first = _model()
    part = StepLoop(first, torch.optim.AdamW(first.parameters(), lr=1e-2), clip_grad=0.5)
    for _ in range(2):
        part.train_one_epoch(first, _batches(x, y, 6), 4, _loss)
    state = part.state_dict()
    resumed = _model(seed=99)  # other weights: the state must replace all of them
    rest = StepLoop(resumed, torch.optim.AdamW(resumed.parameters(), lr=1e-2), clip_grad=0.5)
    rest.load_state_dict(state)
    for _ in range(2):
        rest.train_one_epoch(resumed, _batches(x, y, 6), 4, _loss)
    assert rest.updates == loop.updates == 16
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [{"accum_steps": 0}, {"amp": "fp8"}])
def test_bad_settings_are_refused(bad):
    model = _model()
    with pytest.raises(ValueError, match=next(iter(bad))):
        StepLoop(model, torch.optim.SGD(model.parameters(), lr=0.1), **bad)


def test_keep_best_keeps_the_best_state_breaks_ties_and_stops_after_patience():
    model = nn.Linear(1, 1, bias=False)
    best = KeepBest(patience=2)
    scores = [(0.5, -1.0), (0.7, -2.0), (0.7, -1.5), (0.6, 0.0), (0.7, -1.5), (0.9, 0.0)]
    stops = []
    for epoch, score in enumerate(scores, 1):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        stops.append(best.offer(epoch, score, model))
        if stops[-1]:
            break
    # epoch 3 wins the tie on the second key; 4 and 5 (equal, not better) are 2 stale epochs
    assert stops == [False, False, False, False, True] and best.epoch == 3
    with torch.no_grad():
        model.weight.fill_(0.0)
    best.restore(model)
    assert model.weight.item() == 3.0
    with pytest.raises(ValueError, match="patience"):
        KeepBest(patience=0)
    with pytest.raises(RuntimeError, match="no epoch"):
        KeepBest().restore(model)
