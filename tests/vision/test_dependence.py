import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from poolwise.vision.train.dependence import group_dependence, linear_cka


def test_hand_computed_cka():
    x = torch.tensor([[1.0], [2.0], [3.0]])
    y = torch.tensor([[1.0], [3.0], [2.0]])
    # centred: x = (-1, 0, 1), y = (-1, 1, 0): (y.x)^2 / (|x|^2 |y|^2) = 1 / 4
    assert linear_cka(x, y) == pytest.approx(0.25)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 10.0))
def test_cka_invariances(seed, scale):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 5, dtype=torch.float64, generator=g)
    q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64, generator=g))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, scale * x @ q + 3.0) == pytest.approx(1.0)
    y = torch.randn(40, 4, dtype=torch.float64, generator=g)
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x))
    assert 0.0 <= linear_cka(x, y) <= 1.0 + 1e-12


def test_group_dependence_of_copied_and_independent_groups():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5000, 4, generator=g)
    copies = torch.cat([a, 2 * a, -a], dim=1)
    result = group_dependence(copies, 3)
    assert result["mean"] == pytest.approx(1.0) and len(result["matrix"]) == 3
    independent = group_dependence(torch.randn(5000, 12, generator=g), 3)
    assert independent["mean"] < 0.01
    with pytest.raises(ValueError, match="groups >= 2 dividing C=12"):
        group_dependence(copies, 5)
    with pytest.raises(ValueError, match="constant"):
        linear_cka(torch.ones(4, 2), torch.randn(4, 2))
