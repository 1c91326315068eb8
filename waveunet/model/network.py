"""The Wave-U-Net (Stoller, Ewert, Dixon 2018) and its shape arithmetic.

A 1D U-Net on raw audio. Down level i: convolution (kernel ``down_kernel``,
``initial_filters * (i + 1)`` channels, LeakyReLU 0.2), kept as a skip, then
decimation ``x[..., ::2]``. A bottleneck convolution. Up level i: upsample
n -> 2n - 1 (linear with aligned corners, or learned interpolation), centre-crop
the skip, concatenate ``[skip, upsampled]``, convolution (kernel ``up_kernel``).
Finally the centre-cropped input mixture is concatenated to the features and
the output head (``heads.py``) makes the stems.

With ``context=True`` every convolution is *valid*, so the output is the centre
part of a longer input: lengths follow exact formulas (``input_samples_for``),
which lets inference tile a song into output chunks with their true context,
with no seams. With ``context=False`` convolutions are zero-padded ("same") and
input length == output length, a multiple of ``2 ** levels``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..settings.schema import ModelConfig, typed
from .heads import ModelOutput, OutputHead, OutputMode

__all__ = ["ModelConfig", "ShapeArithmetic", "WaveUNet", "build_model", "model_from_description"]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class ShapeArithmetic:
    """Exact input/output lengths, computed in closed form (see module docstring).

    Valid convolutions: with bottleneck output length x,
    ``output = 2**L (x - K_up) + K_up`` and
    ``input = 2**L (x + 2 K_down - 3) - K_down + 2``.
    """

    def __init__(self, levels: int, down_kernel: int, up_kernel: int, context: bool):
        self.levels, self.down_kernel, self.up_kernel = levels, down_kernel, up_kernel
        self.context = context
        self.scale = 2**levels
        # Smallest bottleneck length whose output has at least one sample.
        self.min_bottleneck = max(1, up_kernel - (up_kernel - 1) // self.scale)

    def _output_from_bottleneck(self, x: int) -> int:
        return self.scale * (x - self.up_kernel) + self.up_kernel

    def _input_from_bottleneck(self, x: int) -> int:
        return self.scale * (x + 2 * self.down_kernel - 3) - self.down_kernel + 2

    def _bottleneck_for_output(self, output_samples: int) -> int:
        x = self.up_kernel + _ceil_div(output_samples - self.up_kernel, self.scale)
        return max(self.min_bottleneck, x)

    def output_samples_for(self, output_samples: int) -> int:
        """The smallest valid output length >= ``output_samples``."""
        if output_samples < 1:
            raise ConfigError(f"output length must be >= 1 sample, got {output_samples}")
        if not self.context:
            return _ceil_div(output_samples, self.scale) * self.scale
        return self._output_from_bottleneck(self._bottleneck_for_output(output_samples))

    def input_samples_for(self, output_samples: int) -> int:
        """Input length that yields the valid output length >= ``output_samples``."""
        if not self.context:
            return self.output_samples_for(output_samples)
        if output_samples < 1:
            raise ConfigError(f"output length must be >= 1 sample, got {output_samples}")
        return self._input_from_bottleneck(self._bottleneck_for_output(output_samples))

    def valid_output_for_input(self, input_samples: int) -> int:
        """Output length of the largest valid input <= ``input_samples`` (0 if none fits)."""
        if not self.context:
            return (input_samples // self.scale) * self.scale
        x = (input_samples + self.down_kernel - 2) // self.scale - 2 * self.down_kernel + 3
        if x < self.min_bottleneck:
            return 0
        return self._output_from_bottleneck(x)

    def is_valid_input(self, input_samples: int) -> bool:
        out = self.valid_output_for_input(input_samples)
        return out > 0 and self.input_samples_for(out) == input_samples

    def context_samples(self) -> int:
        """Input samples on each side of an output chunk (0 without context)."""
        out = self.output_samples_for(1)
        return (self.input_samples_for(out) - out) // 2


def centre_crop(x: torch.Tensor, length: int) -> torch.Tensor:
    excess = x.shape[-1] - length
    if excess < 0 or excess % 2:
        raise ValueError(f"cannot centre-crop {x.shape[-1]} samples to {length}")
    start = excess // 2
    return x[..., start:start + length]


def interpolate_upsample(x: torch.Tensor, weight: torch.Tensor | float, same: bool) -> torch.Tensor:
    """Upsample n -> 2n - 1 (``same``: 2n) by inserting ``w * left + (1 - w) * right``.

    ``w = 0.5`` is linear interpolation with aligned corners; a learned per-channel
    ``w`` in (0, 1) is the original's learned upsampling. With ``same`` the last
    sample is repeated so the length doubles exactly (the original's resize
    without aligned corners).
    """
    n = x.shape[-1]
    if isinstance(weight, torch.Tensor):
        # Under autocast the features are bf16/fp16 while the learned weight stays a
        # float32 parameter; lerp needs one dtype (the cast keeps the weight's gradient).
        weight = weight.to(x.dtype)
    out = x.new_empty(*x.shape[:-1], 2 * n if same else 2 * n - 1)
    out[..., 0::2] = x
    # lerp(right, left, w) = w * left + (1 - w) * right, in one pass
    middle = torch.lerp(x[..., 1:], x[..., :-1], weight)
    if same:
        out[..., 1:-1:2] = middle
        out[..., -1] = x[..., -1]
    else:
        out[..., 1::2] = middle
    return out


class _DecimateAndCrop(torch.autograd.Function):
    """``y -> (y[..., ::2], centre crop of y)``: the two uses of a down level's output.

    Slicing twice would make autograd build two zero-filled, full-size gradients
    for ``y`` and add them (about a tenth of a CPU training step); here the
    backward receives both gradients at once and fills one buffer.
    """

    @staticmethod
    def forward(ctx, y: torch.Tensor, crop_start: int, crop_length: int):
        ctx.shape, ctx.crop = y.shape, (crop_start, crop_length)
        return y[..., ::2].contiguous(), y[..., crop_start:crop_start + crop_length].contiguous()

    @staticmethod
    def backward(ctx, grad_decimated, grad_crop):
        grad = (
            grad_crop.new_zeros(ctx.shape)
            if grad_crop is not None
            else grad_decimated.new_zeros(ctx.shape)
        )
        if grad_decimated is not None:
            grad[..., ::2] = grad_decimated
        if grad_crop is not None:
            start, length = ctx.crop
            grad[..., start:start + length] += grad_crop
        return grad, None, None


class WaveUNet(nn.Module):
    def __init__(self, config: ModelConfig, output: OutputMode):
        super().__init__()
        self.config, self.output_mode = config, output
        self.shapes = ShapeArithmetic(
            config.levels, config.down_kernel, config.up_kernel, config.context
        )
        f, levels = config.initial_filters, config.levels
        pad_down = 0 if config.context else config.down_kernel // 2
        pad_up = 0 if config.context else config.up_kernel // 2

        self.down = nn.ModuleList()
        in_ch = config.channels
        for i in range(levels):
            self.down.append(nn.Conv1d(in_ch, f * (i + 1), config.down_kernel, padding=pad_down))
            in_ch = f * (i + 1)
        self.bottleneck = nn.Conv1d(in_ch, f * (levels + 1), config.down_kernel, padding=pad_down)
        in_ch = f * (levels + 1)

        self.up = nn.ModuleList()
        self.upsample_logits = nn.ParameterList()
        for i in range(levels):
            skip_ch, out_ch = f * (levels - i), f * (levels - i)
            if config.upsampling == "learned":
                # zeros -> sigmoid 0.5: training starts from linear interpolation
                self.upsample_logits.append(nn.Parameter(torch.zeros(in_ch, 1)))
            self.up.append(nn.Conv1d(skip_ch + in_ch, out_ch, config.up_kernel, padding=pad_up))
            in_ch = out_ch

        self.head = OutputHead(
            in_ch + config.channels,
            config.channels,
            len(config.sources),
            output,
            kernel_size=config.output_kernel,
            padding=config.output_kernel // 2,
        )

    # -- shape arithmetic -------------------------------------------------
    @property
    def output_samples(self) -> int:
        """Valid output length for the configured (desired) ``output_samples``."""
        return self.shapes.output_samples_for(self.config.output_samples)

    @property
    def input_samples(self) -> int:
        return self.shapes.input_samples_for(self.config.output_samples)

    def input_samples_for(self, output_samples: int) -> int:
        return self.shapes.input_samples_for(output_samples)

    def output_samples_for(self, output_samples: int) -> int:
        return self.shapes.output_samples_for(output_samples)

    def valid_output_for_input(self, input_samples: int) -> int:
        return self.shapes.valid_output_for_input(input_samples)

    @property
    def context_samples(self) -> int:
        return self.shapes.context_samples()

    @property
    def sources(self) -> tuple[str, ...]:
        return self.config.sources

    @property
    def sample_rate_hz(self) -> int:
        return self.config.sample_rate_hz

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- forward ----------------------------------------------------------
    def check_input(self, mixture: torch.Tensor) -> None:
        if mixture.dim() != 3 or mixture.shape[1] != self.config.channels:
            raise ValueError(
                f"expected a mixture of shape (batch, {self.config.channels}, samples), "
                f"got {tuple(mixture.shape)}"
            )
        n = mixture.shape[-1]
        if not self.shapes.is_valid_input(n):
            out = max(1, self.valid_output_for_input(n))
            lower = self.input_samples_for(out) if self.valid_output_for_input(n) else None
            upper = self.input_samples_for(self.output_samples_for(out + 1))
            raise ValueError(
                f"{n} input samples is not a valid length for this model; nearest valid "
                f"lengths: {lower if lower is not None else '(none below)'} and {upper} "
                "(use input_samples_for(output_samples))"
            )

    def _upsampled_lengths(self, input_samples: int) -> list[int]:
        """Length after each up level's upsampling: the length its skip is cropped to."""
        c = self.config
        shrink_down = 0 if not c.context else c.down_kernel - 1
        shrink_up = 0 if not c.context else c.up_kernel - 1
        n = input_samples
        for _ in range(c.levels):
            n = _ceil_div(n - shrink_down, 2)  # conv, then keep every other sample
        n -= shrink_down  # bottleneck
        lengths = []
        for _ in range(c.levels):
            n = 2 * n if not c.context else 2 * n - 1
            lengths.append(n)
            n -= shrink_up
        return lengths

    def forward(self, mixture: torch.Tensor) -> ModelOutput:
        """mixture (B, C, T_in) -> ModelOutput with stems (B, S, C, T_out)."""
        self.check_input(mixture)
        same = not self.config.context
        crop_lengths = self._upsampled_lengths(mixture.shape[-1])[::-1]  # per down level
        x = mixture
        skips = []
        # In-place activations: a convolution's backward needs its input, not its output.
        kernel = self.config.down_kernel
        for conv, crop_length in zip(self.down, crop_lengths, strict=True):
            conv_length = x.shape[-1] - (kernel - 1 if self.config.context else 0)
            start = (conv_length - crop_length) // 2
            if 2 * crop_length < conv_length:
                # Most of this level's output is context: only its even samples (the next
                # level) and the centre (the skip) are ever used, so compute just those.
                # Same numbers as the full convolution, up to ~40 % fewer multiply-adds.
                x_next = F.conv1d(x, conv.weight, conv.bias, stride=2)
                skip = conv(x[..., start:start + crop_length + kernel - 1])
                x = F.leaky_relu(x_next, 0.2, inplace=True)
                skip = F.leaky_relu(skip, 0.2, inplace=True)
            else:
                y = F.leaky_relu(conv(x), 0.2, inplace=True)
                x, skip = _DecimateAndCrop.apply(y, start, crop_length)
            skips.append(skip)
        x = F.leaky_relu(self.bottleneck(x), 0.2, inplace=True)
        for i, conv in enumerate(self.up):
            weight = torch.sigmoid(self.upsample_logits[i]) if self.upsample_logits else 0.5
            x = interpolate_upsample(x, weight, same)
            x = torch.cat([skips[-i - 1], x], dim=1)
            x = F.leaky_relu(conv(x), 0.2, inplace=True)
        mix = centre_crop(mixture, x.shape[-1])
        return self.head(torch.cat([mix, x], dim=1), mix)

    def describe(self) -> dict:
        """Self-description saved with checkpoints and printed by ``waveunet info``."""
        return {
            "model": self.config.to_dict(),
            "output": {
                "type": self.output_mode.type,
                "activation": self.output_mode.activation,
                "low": self.output_mode.low,
                "high": self.output_mode.high,
            },
        }


def build_model(model_cfg: Any, output_cfg: Any) -> WaveUNet:
    """Build from config mappings (Hydra DictConfig or plain dicts), checked as the typed
    settings (:class:`waveunet.settings.schema.ModelConfig`,
    :class:`waveunet.model.heads.OutputMode`)."""
    return WaveUNet(typed(ModelConfig, model_cfg, "model."),
                    typed(OutputMode, output_cfg, "output."))


def model_from_description(description: dict) -> WaveUNet:
    return build_model(description["model"], description["output"])
