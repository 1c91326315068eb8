"""Training losses on the head's outputs.

* ``mse`` (the original's) and ``l1`` compare the estimates with the targets.
* ``cross_entropy`` is the bounded loss the background note suggests for
  squashing outputs: outputs and targets are mapped from [low, high] to [0, 1]
  and compared with binary cross-entropy *on the logits* (the pre-activation),
  so for ``tanh`` the gradient with respect to the pre-activation ``a`` is
  ``2 (sigmoid(2a) - t)``: it does not vanish when the output saturates on the
  wrong side, unlike MSE through tanh, whose gradient carries a ``tanh'(a)``
  factor. It needs an activation with a logit form (``tanh``, ``sigmoid``). A
  ``difference`` source has no pre-activation of its own; its error is the
  negative sum of the others', so the cross-entropy on the predicted sources
  already trains it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..settings.schema import LOSSES
from .heads import ModelOutput, OutputHead


def check_loss(name: str, head: OutputHead) -> None:
    if name not in LOSSES:
        raise ConfigError(f"loss.name: unknown {name!r}; choose from {', '.join(LOSSES)}")
    if name == "cross_entropy":
        head.activation.logits(torch.zeros(1))  # raises ConfigError when there is no logit form


def compute_loss(
    name: str, output: ModelOutput, targets: torch.Tensor, head: OutputHead
) -> torch.Tensor:
    """Scalar loss, averaged over every sample of every source, in float32."""
    estimates = output.estimates.float()
    targets = targets.float()
    if name == "mse":
        return F.mse_loss(estimates, targets)
    if name == "l1":
        return F.l1_loss(estimates, targets)
    if name == "cross_entropy":
        bounds = head.activation.bounds
        predicted = output.pre_activation.shape[1]
        unit_targets = ((targets[:, :predicted] - bounds.low) / (bounds.high - bounds.low)).clamp(
            0, 1
        )
        logits = head.activation.logits(output.pre_activation.float())
        return F.binary_cross_entropy_with_logits(logits, unit_targets)
    raise ConfigError(f"loss.name: unknown {name!r}; choose from {', '.join(LOSSES)}")
