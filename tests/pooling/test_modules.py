"""Contract over every registered pool, plus GGeM module options."""

import pytest
import torch
from torch import nn

from poolwise.pooling import GGeM, create_pool, list_pools
from poolwise.pooling.functional import avg_pool, max_pool

C, G = 12, 3
INPUTS = {
    "tokens (B, N, C)": ((2, 7, C), -1),
    "map (B, C, H, W)": ((2, C, 3, 4), 1),
    "series (B, C, T)": ((2, C, 9), 1),
}


def build(name, **kwargs):
    return create_pool(name, num_channels=C, groups=G, **kwargs)


def test_registry_has_the_required_names():
    assert {"token", "avg", "max", "avgmax", "gem", "ggem", "cgem"} <= set(list_pools())


def test_unknown_name_lists_known_pools():
    with pytest.raises(ValueError, match=r"unknown pool 'mean'.*avg.*ggem"):
        create_pool("mean")


@pytest.mark.parametrize("inputs", INPUTS)
@pytest.mark.parametrize("name", list_pools())
def test_pool_contract(name, inputs):
    shape, channel_dim = INPUTS[inputs]
    torch.manual_seed(0)
    pool = build(name, channel_dim=channel_dim)
    x = torch.randn(shape, requires_grad=True)
    y = pool(x)
    assert y.shape == (2, C)
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for param in pool.parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all()
    pool.eval()
    with torch.no_grad():
        torch.testing.assert_close(pool(x), pool(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", list_pools())
def test_prefix_tokens_are_excluded(name):
    x = torch.randn(2, 9, C, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    pool = build(name, num_prefix_tokens=2)
    torch.manual_seed(0)  # the same initial weights for pools with parameters
    expected = x[:, 0] if name == "token" else build(name)(x[:, 2:])
    torch.testing.assert_close(pool(x), expected)


def test_closed_form_baselines():
    x = torch.randn(3, 8, C)
    torch.testing.assert_close(build("avg")(x), x.mean(1))
    torch.testing.assert_close(build("max")(x), x.amax(1))
    torch.testing.assert_close(build("avgmax")(x), 0.5 * (x.mean(1) + x.amax(1)))
    torch.testing.assert_close(build("token")(x), x[:, 0])
    m = torch.randn(3, C, 4, 5)
    torch.testing.assert_close(avg_pool(m, channel_dim=1), m.mean((2, 3)))
    torch.testing.assert_close(max_pool(m, channel_dim=1), m.amax((2, 3)))


def test_learnable_pools_have_the_right_number_of_exponents():
    assert build("gem").p.shape == (1,)
    assert build("ggem").p.shape == (G,)
    assert build("cgem").p.shape == (C,)
    assert torch.all(build("ggem").p == 3.0)


def test_repr_shows_learned_p():
    pool = GGeM(2, p=3.0)
    with torch.no_grad():
        pool.p.copy_(torch.tensor([2.5, 4.25]))
    assert "p=[2.5, 4.25]" in repr(pool)


def test_frozen_p_is_a_buffer():
    pool = GGeM(2, learnable=False)
    assert list(pool.parameters()) == [] and "p" in dict(pool.named_buffers())
    assert "p" in pool.state_dict()


def test_p_below_bound_stays_finite_and_can_recover():
    pool = GGeM(2, p=3.0, p_min=1.0)
    with torch.no_grad():
        pool.p.copy_(torch.tensor([-5.0, 0.0]))  # an optimizer overshot
    x = torch.rand(2, 6, 4) + 0.1
    y = pool(x)
    torch.testing.assert_close(y, x.mean(1))  # evaluated at the bound p = 1
    y.sum().backward()
    assert torch.isfinite(pool.p.grad).all() and torch.all(pool.p.grad != 0)


def test_training_moves_p():
    torch.manual_seed(0)
    pool = GGeM(2)
    opt = torch.optim.SGD(pool.parameters(), lr=0.5)
    x = torch.rand(16, 10, 4) + 0.1
    for _ in range(20):  # push the output towards the max: p must grow
        opt.zero_grad()
        (pool(x) - x.amax(1)).square().mean().backward()
        opt.step()
    assert torch.all(pool.p > 3.0)


def test_softplus_keeps_information_of_negative_tokens():
    x = -torch.rand(2, 5, 4) - 0.5
    clamp, soft = GGeM(1, negative="clamp"), GGeM(1, negative="softplus")
    # clamp maps every all-negative input to eps; softplus keeps them apart
    torch.testing.assert_close(clamp(x), clamp(2 * x))
    assert not torch.allclose(soft(x), soft(2 * x))
    xg = x.clone().requires_grad_()
    soft(xg).sum().backward()
    assert torch.all(xg.grad > 0)


def test_module_checks_arguments_and_channels():
    with pytest.raises(ValueError, match=r"num_channels=10 .* groups=3"):
        GGeM(3, num_channels=10)
    with pytest.raises(ValueError, match="groups"):
        create_pool("ggem", num_channels=C)
    with pytest.raises(ValueError, match="num_channels"):
        create_pool("cgem")
    with pytest.raises(ValueError, match="'abs'"):
        GGeM(1, negative="abs")
    with pytest.raises(ValueError, match="p_min"):
        GGeM(1, p_min=0.0)
    with pytest.raises(ValueError, match="expected 12 channels"):
        build("ggem")(torch.rand(2, 5, 6))
    with pytest.raises(ValueError, match="token inputs"):
        build("avg", num_prefix_tokens=1, channel_dim=1)(torch.rand(2, C, 5))


def test_pool_is_a_plain_module_in_a_model():
    model = nn.Sequential(nn.Linear(4, C), build("ggem"), nn.Linear(C, 2))
    out = model(torch.randn(3, 5, 4))
    assert out.shape == (3, 2)


@pytest.mark.parametrize("name", list_pools())
@pytest.mark.parametrize("shape,channel_dim,match", [
    ((0, 7, C), -1, r"empty batch: input of shape \(0, 7, 12\)"),
    ((2, 0, C), -1, r"shape \(2, 0, 12\) has no tokens/positions to pool"),
    ((2, C, 0), 1, r"shape \(2, 12, 0\) has no tokens/positions"),
    ((2, 7, 0), -1, r"shape \(2, 7, 0\) has no channels at dim -1"),
])
def test_empty_dims_are_clear_errors_for_every_pool(name, shape, channel_dim, match):
    pool = create_pool(name, num_channels=C, groups=G, channel_dim=channel_dim)
    with pytest.raises(ValueError, match=match):
        pool(torch.rand(shape))


@pytest.mark.parametrize("kwargs,match", [
    ({"p": float("inf")}, r"initial p=inf must be finite"),
    ({"p": float("nan")}, r"initial p=nan must be finite"),
    ({"p": 0.5}, r"initial p=0.5 must be finite and >= p_min=1.0"),
    ({"p_min": 0.0}, r"p_min must be finite and > 0, got 0.0"),
    ({"p_min": float("inf"), "p": float("inf")}, r"p_min must be finite"),
    ({"eps": float("nan")}, r"eps must be finite and > 0"),
])
def test_bad_exponents_are_refused_at_construction(kwargs, match):
    for name in ("gem", "ggem", "cgem"):
        with pytest.raises(ValueError, match=match):
            build(name, **kwargs)


def test_a_diverged_p_fails_loudly_in_the_forward():
    pool = build("ggem")
    with torch.no_grad():
        pool.p[1] = float("nan")  # what a diverged optimizer step leaves
    with pytest.raises(ValueError, match=r"exponent p must be finite and > 0; got \[nan\].*"
                       r"learning rate"):
        pool(torch.rand(2, 7, C))
