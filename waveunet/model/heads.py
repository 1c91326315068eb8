"""Bounded output heads: how the network turns its last features into stems.

Audio lives in a bounded interval, [-1, 1] by default, and the last layer has to
respect that somehow. The choices here, and why they matter
(Stoller, "Bounded output regression with neural networks"):

* ``tanh`` squashes the pre-activation ``a`` into (low, high). The bounds are
  never reached, so a target at full scale pushes ``a`` towards infinity, and
  ``tanh'(a)`` vanishes as it saturates: a network whose outputs all saturate
  gets (almost) no gradient and may never recover. Loud targets also come out
  attenuated.
* ``clip`` is a hard clamp to [low, high] in training too: the bounds are
  reachable, but the gradient outside them is exactly zero, so an output that
  overshoots cannot be pulled back.
* ``linear`` is the proposal: the identity while training (the loss always has
  a gradient of slope 1, so an overshoot of 1.4 towards a target of 1.0 is
  corrected), and a clip to [low, high] only at evaluation / inference.
* ``sin`` and a scaled ``sigmoid`` also squash into the interval; ``sin`` can
  reach the bounds but is periodic, ``sigmoid`` behaves like tanh.
* ``relu`` and ``softplus`` bound one side only (outputs >= low), as asked for
  positive-valued targets; ``relu``'s gradient is zero below the bound,
  ``softplus``'s only decays.

Output *types*: ``direct`` predicts every source with its own output
convolution; ``difference`` predicts all but the last source and sets the last
to ``mixture - sum(others)`` (the original Wave-U-Net's vocals =
mixture - accompaniment). The difference source is clipped to the bounds at
evaluation time, as in the original.

Training vs. evaluation follows ``nn.Module.training``: ``model.eval()`` turns
on the test-time clip.

What each activation does at the bounds lives on its class (:class:`Activation`): its
training output, its test-time clip, its slope at the centre (below 1% of it a gradient
counts as vanished), which outputs count as saturated, and its logit form for the
cross-entropy loss. Nothing elsewhere looks an activation up by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from ..errors import ConfigError
from ..metrics import beyond_bounds
from ..settings.schema import OUTPUT_TYPES, OutputConfig, check

__all__ = ["ACTIVATIONS", "OUTPUT_TYPES", "Activation", "ModelOutput", "OutputBounds",
           "OutputHead", "OutputMode", "output_health"]


class OutputBounds(NamedTuple):
    low: float
    high: float | None  # None: bounded below only

    @property
    def centre(self) -> float:
        assert self.high is not None
        return 0.5 * (self.low + self.high)

    @property
    def half_range(self) -> float:
        assert self.high is not None
        return 0.5 * (self.high - self.low)

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.low, max=self.high)

    def measured(self) -> tuple[float, float]:
        """The bounds clipping statistics count against: a one-sided head (relu, softplus) has
        no upper bound, so full scale (``max(1, low + 1)``) counts as its upper one."""
        return self.low, self.high if self.high is not None else max(1.0, self.low + 1.0)


class Activation(nn.Module):
    """Maps the pre-activation ``a`` to an output, and knows how it behaves at the bounds.

    Subclasses say what the output is in training (:meth:`train_output`), whether the bounds
    are applied only at test time (``clips_at_eval``: the one test-time clip rule,
    :meth:`test_time_output`), how steep the activation is at the centre of the interval
    (``centre_slope``), which outputs count as saturated (:meth:`saturated`) and their logit
    form for the cross-entropy loss (:meth:`logits`).
    """

    name: str = ""
    two_sided: bool = True  # needs both bounds
    clips_at_eval: bool = False  # identity-like in training, clamped to the bounds at test time
    centre_slope: float = 1.0  # dy/da at the interval's centre, per unit of half-range

    def __init__(self, bounds: OutputBounds):
        super().__init__()
        self.bounds = bounds

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        y = self.train_output(a)
        return y if self.training else self.test_time_output(y)

    def train_output(self, a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def test_time_output(self, y: torch.Tensor) -> torch.Tensor:
        """The test-time clip: the bounds an activation does not keep by itself."""
        return self.bounds.clamp(y) if self.clips_at_eval else y

    def reference_slope(self) -> float:
        """dy/da at the centre of the interval: a slope below 1% of it counts as vanished."""
        scale = self.bounds.half_range if self.bounds.high is not None else 1.0
        return self.centre_slope * scale

    def saturated(self, a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Outputs fighting the bounds, as a mask: for a squashing activation, those within 1%
        of a bound (where its gradient has vanished); for one clipped at test time, those
        beyond a bound (the clip will change them)."""
        if self.clips_at_eval:
            return beyond_bounds(y, self.bounds.low, self.bounds.high)
        return (y - self.bounds.centre).abs() > 0.99 * self.bounds.half_range

    def logits(self, a: torch.Tensor) -> torch.Tensor:
        """Logits z with ``(y - low) / (high - low) == sigmoid(z)``, for a cross-entropy loss."""
        raise ConfigError(
            f"output.activation={self.name!r} has no logit form; the cross-entropy loss "
            "needs 'tanh' or 'sigmoid'"
        )

    def extra_repr(self) -> str:
        return f"low={self.bounds.low}, high={self.bounds.high}"


class Tanh(Activation):
    name = "tanh"

    def train_output(self, a):
        return self.bounds.centre + self.bounds.half_range * torch.tanh(a)

    def logits(self, a):
        # (tanh(a) + 1) / 2 == sigmoid(2a)
        return 2.0 * a


class Sigmoid(Activation):
    name = "sigmoid"
    centre_slope = 0.5  # 2 h sigmoid'(0) = h / 2

    def train_output(self, a):
        return self.bounds.low + 2.0 * self.bounds.half_range * torch.sigmoid(a)

    def logits(self, a):
        return a


class Sin(Activation):
    name = "sin"

    def train_output(self, a):
        return self.bounds.centre + self.bounds.half_range * torch.sin(a)


class Linear(Activation):
    name = "linear"
    clips_at_eval = True

    def train_output(self, a):
        return a


class Clip(Activation):
    name = "clip"

    def train_output(self, a):
        return self.bounds.clamp(a)

    def saturated(self, a, y):
        # its output never leaves the bounds: look before the clamp
        return beyond_bounds(a, self.bounds.low, self.bounds.high)


class ReLU(Activation):
    name = "relu"
    two_sided = False
    clips_at_eval = True  # applies the upper bound, if one is set, at evaluation

    def train_output(self, a):
        return self.bounds.low + torch.relu(a - self.bounds.low)


class Softplus(Activation):
    name = "softplus"
    two_sided = False
    clips_at_eval = True

    def train_output(self, a):
        # shifted so that a == low maps to low + ln 2, like softplus(0)
        return self.bounds.low + nn.functional.softplus(a - self.bounds.low)


ACTIVATIONS: dict[str, type[Activation]] = {
    cls.name: cls for cls in (Tanh, Linear, Clip, Sin, Sigmoid, ReLU, Softplus)
}


@dataclass
class OutputMode(OutputConfig):
    """What the output head is: ``type`` x ``activation`` on [low, high].

    The settings' own checks (:class:`waveunet.settings.schema.OutputConfig`) plus the rules that
    need the activation classes: the name must be one of them, and a two-sided one needs ``high``.
    """

    def __post_init__(self) -> None:
        check(self, "output.")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"output.activation: unknown {self.activation!r} "
                              f"(choose from {', '.join(ACTIVATIONS)})")
        if self.high is None and ACTIVATIONS[self.activation].two_sided:
            raise ConfigError(
                f"output.high is null, but output.activation={self.activation!r} needs both "
                "bounds (only 'relu' and 'softplus' are one-sided)"
            )

    @property
    def bounds(self) -> OutputBounds:
        return OutputBounds(float(self.low), None if self.high is None else float(self.high))

    @property
    def name(self) -> str:
        return f"{self.activation}_{self.type}"

    def predicted_sources(self, num_sources: int) -> int:
        """How many sources get their own output convolution."""
        return num_sources - 1 if self.type == "difference" else num_sources


class ModelOutput(NamedTuple):
    """Everything a head produces; ``estimates`` is what users get.

    estimates: (B, S, C, T) the stems (clipped to the bounds in eval mode where
        the activation or the difference source asks for it).
    unclipped: (B, S, C, T) the same stems without any test-time clip (equal to
        ``estimates`` in training); clipping statistics compare the two.
    pre_activation: (B, P, C, T) the output convolutions' values for the P
        predicted sources, before the activation.
    """

    estimates: torch.Tensor
    unclipped: torch.Tensor
    pre_activation: torch.Tensor


class OutputHead(nn.Module):
    """One kernel-``k`` convolution per predicted source, then the bounded activation."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_sources: int,
        mode: OutputMode,
        kernel_size: int = 1,
        padding: int = 0,
    ):
        super().__init__()
        if num_sources < 1 or (mode.type == "difference" and num_sources < 2):
            raise ConfigError(
                f"model.sources: output.type={mode.type!r} needs at least "
                f"{2 if mode.type == 'difference' else 1} source(s), got {num_sources}"
            )
        self.mode = mode
        self.channels = channels
        self.num_sources = num_sources
        self.convs = nn.ModuleList(
            nn.Conv1d(in_channels, channels, kernel_size, padding=padding)
            for _ in range(mode.predicted_sources(num_sources))
        )
        self.activation = ACTIVATIONS[mode.activation](mode.bounds)

    def forward(self, features: torch.Tensor, mixture: torch.Tensor) -> ModelOutput:
        """features (B, F, T) and the mixture cropped to T, (B, C, T).

        The output convolutions run in float32 even under bf16/fp16 autocast: they are a
        sliver of the work (kernel 1, C output channels), and bf16's 8-bit mantissa in the
        stems themselves would cost a difference source most (a quiet vocal is the mixture
        minus a loud accompaniment rounded to bf16).
        """
        with torch.autocast(features.device.type, enabled=False):
            features = features.to(self.convs[0].weight.dtype)  # the parameters' (float32)
            pre = torch.stack([conv(features) for conv in self.convs], dim=1)  # (B, P, C, T)
        predicted_unclipped = self.activation.train_output(pre)
        test_time = not self.training
        predicted = (self.activation.test_time_output(predicted_unclipped) if test_time
                     else predicted_unclipped)
        if self.mode.type == "direct":
            return ModelOutput(predicted, predicted_unclipped, pre)
        # The difference source comes from the (clipped) other estimates, as in
        # the original, and is clipped itself at test time; its unclipped twin
        # comes from the unclipped others, so unclipped stems sum to the mixture.
        last = mixture - predicted.sum(dim=1)
        if test_time:
            last = self.activation.bounds.clamp(last)
        last_unclipped = mixture - predicted_unclipped.sum(dim=1)
        estimates = torch.cat([predicted, last.unsqueeze(1)], dim=1)
        unclipped = torch.cat([predicted_unclipped, last_unclipped.unsqueeze(1)], dim=1)
        return ModelOutput(estimates, unclipped, pre)


@torch.no_grad()
def output_health(output: ModelOutput, targets: torch.Tensor, head: OutputHead) -> dict[str, float]:
    """How hard the network is fighting its output range, on one batch.

    saturated: fraction of predicted outputs within 1% of a bound (tanh-like
        heads: |y| > 0.99 on [-1, 1]) or beyond a bound (heads that clip only
        at test time: the fraction the test-time clip will change).
    pre_activation_mean_abs: mean |a| of the output convolutions.
    vanishing_gradient: fraction of predicted outputs whose activation slope
        dy/da is below 1% of its slope at the interval's centre.
    peak_ratio: max |estimate| / max |target| (tanh output below 1 shows its
        attenuation).
    """
    act = head.activation
    pre = output.pre_activation.float()
    predicted = pre.shape[1]
    y = act.train_output(pre)
    with torch.enable_grad():
        a = pre.detach().requires_grad_(True)
        (slope,) = torch.autograd.grad(act.train_output(a).sum(), a)
    target_peak = targets[:, :predicted].abs().max().clamp_min(1e-8)
    return {
        "saturated": act.saturated(pre, y).float().mean().item(),
        "pre_activation_mean_abs": pre.abs().mean().item(),
        "vanishing_gradient": (slope.abs() < 0.01 * act.reference_slope()).float().mean().item(),
        "peak_ratio": (output.estimates[:, :predicted].float().abs().max() / target_peak).item(),
    }
