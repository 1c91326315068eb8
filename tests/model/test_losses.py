"""Losses: the cross-entropy-style bounded loss keeps a gradient where MSE through tanh loses it."""

import pytest
import torch

from waveunet.errors import ConfigError
from waveunet.model.heads import OutputHead, OutputMode
from waveunet.model.losses import check_loss, compute_loss


def _output_for(pre_activation: float, activation="tanh"):
    head = OutputHead(1, channels=1, num_sources=1, mode=OutputMode("direct", activation))
    a = torch.full((1, 1, 1, 8), pre_activation, requires_grad=True)
    y = head.activation(a)
    from waveunet.model.heads import ModelOutput

    return head, a, ModelOutput(y, y, a)


@pytest.mark.parametrize("a", [6.0, 10.0])
def test_cross_entropy_gradient_does_not_vanish_when_tanh_saturates(a):
    target = torch.full((1, 1, 1, 8), -1.0)  # saturated on the wrong side
    head, pre, out = _output_for(a)
    compute_loss("mse", out, target, head).backward()
    mse_grad = pre.grad.abs().mean().item()
    head, pre, out = _output_for(a)
    compute_loss("cross_entropy", out, target, head).backward()
    ce_grad = pre.grad.abs().mean().item()
    assert mse_grad < 1e-3
    # d/da BCE(sigmoid(2a), 0) = 2 sigmoid(2a) ~ 2, averaged over 8 samples
    assert ce_grad == pytest.approx(2.0 / 8, rel=1e-3)


def test_cross_entropy_is_minimal_at_the_target():
    target = torch.full((1, 1, 1, 8), 0.5)
    losses = []
    for a in [0.0, torch.atanh(torch.tensor(0.5)).item(), 2.0]:
        head, _, out = _output_for(a)
        losses.append(compute_loss("cross_entropy", out, target, head).item())
    assert losses[1] < losses[0] and losses[1] < losses[2]


def test_mse_and_l1_match_their_definitions():
    head, _, out = _output_for(0.3, activation="linear")
    target = torch.zeros(1, 1, 1, 8)
    assert compute_loss("mse", out, target, head).item() == pytest.approx(0.09)
    assert compute_loss("l1", out, target, head).item() == pytest.approx(0.3)


def test_cross_entropy_needs_a_logit_form():
    head = OutputHead(1, 1, 1, OutputMode("direct", "linear"))
    with pytest.raises(ConfigError, match="cross-entropy loss needs 'tanh' or 'sigmoid'"):
        check_loss("cross_entropy", head)
    with pytest.raises(ConfigError, match="loss.name"):
        check_loss("hinge", head)
