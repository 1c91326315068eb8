"""Training augmentations: small named ``nn.Module``s on the stem batch ``(B, S, C, T)``.

They run on the training device after the DataLoader (Demucs style), before
:func:`waveunet.data.split_batch` re-sums the mixture, so mixture and targets
always agree. Every module is the identity in eval mode. Randomness comes from
torch's generator on the batch's device (seed it with ``torch.manual_seed``).

Config (``configs/data/*.yaml``)::

    augmentations: [gain, channelswap, remix]
    augmentation_params: {gain: {low: 0.7, high: 1.0}, remix: {group_size: 4}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError


def _probability(name: str, p: float) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"{name} augmentation needs 0 <= p <= 1 (got p={p})")
    return p


def _per_example(stems: torch.Tensor) -> tuple[int, int]:
    if stems.dim() != 4:
        raise ValueError(
            "augmentations expect (batch, sources, channels, samples), got shape "
            f"{tuple(stems.shape)}"
        )
    return stems.shape[0], stems.shape[1]


class Gain(nn.Module):
    """Scale each source of each example by U(low, high) (the original Wave-U-Net: 0.7..1.0)."""

    def __init__(self, low: float = 0.7, high: float = 1.0):
        super().__init__()
        if not 0 <= low <= high:
            raise ConfigError(
                f"gain augmentation needs 0 <= low <= high (got low={low}, high={high})"
            )
        self.low, self.high = float(low), float(high)

    def forward(self, stems: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return stems
        b, s = _per_example(stems)
        gain = torch.empty(b, s, 1, 1, device=stems.device, dtype=stems.dtype).uniform_(
            self.low, self.high
        )
        return stems * gain


class _PerSourceChoice(nn.Module):
    """Apply ``transform`` to each source of each example with probability ``p``."""

    name = ""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = _probability(self.name, p)

    def applies(self, stems: torch.Tensor) -> bool:
        return True

    def transform(self, stems: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, stems: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return stems
        b, s = _per_example(stems)
        if not self.applies(stems):
            return stems
        chosen = torch.rand(b, s, 1, 1, device=stems.device) < self.p
        return torch.where(chosen, self.transform(stems), stems)


class ChannelSwap(_PerSourceChoice):
    """Swap left and right of each source with probability ``p`` (no-op for mono)."""

    name = "channelswap"

    def applies(self, stems: torch.Tensor) -> bool:
        return stems.shape[2] == 2

    def transform(self, stems: torch.Tensor) -> torch.Tensor:
        return stems.flip(2)


class SignFlip(_PerSourceChoice):
    """Negate each source with probability ``p``: the waveform's sign is inaudible."""

    name = "signflip"

    def transform(self, stems: torch.Tensor) -> torch.Tensor:
        return -stems


class Remix(nn.Module):
    """Shuffle each source independently within groups of ``group_size`` consecutive examples:
    new mixtures from other tracks' stems (Demucs' remix, with its group size of 4).

    Partners come from the example's own group, never from the whole batch: a process holds
    whole groups of the global batch (:func:`check_batch`), so the partners' statistics are the
    same on 1 GPU or 8, where a shuffle of each process's share would not be.
    """

    def __init__(self, group_size: int = 4):
        super().__init__()
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ConfigError(f"remix augmentation needs an integer group_size >= 1 "
                              f"(got group_size={group_size!r})")
        self.group_size = group_size

    def forward(self, stems: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return stems
        b, s = _per_example(stems)
        g = self.group_size
        if b % g:
            raise ValueError(f"remix: a batch of {b} examples is not whole groups of {g} "
                             "(data.augmentation_params.remix.group_size)")
        groups = stems.reshape(b // g, g, *stems.shape[1:])
        # a permutation of each group, per source
        order = torch.argsort(torch.rand(b // g, g, s, device=stems.device), dim=1)
        shuffled = torch.gather(groups, 1, order[..., None, None].expand_as(groups))
        return shuffled.reshape(stems.shape)


def check_batch(augmentation: nn.Module, batch_per_process: int) -> None:
    """Refuse, before training, a remix group size that does not divide each process's batch."""
    for module in augmentation.modules():
        if isinstance(module, Remix) and batch_per_process % module.group_size:
            raise ConfigError(
                f"data.augmentation_params.remix.group_size={module.group_size} must divide the "
                f"batch each process trains on ({batch_per_process}: optim.batch_size over the "
                "processes)")


AUGMENTATIONS: dict[str, type[nn.Module]] = {
    "gain": Gain,
    "channelswap": ChannelSwap,
    "signflip": SignFlip,
    "remix": Remix,
}


def build_augmentation(names: Sequence[str], **params: Mapping[str, Any]) -> nn.Module:
    """Compose named augmentations in order; ``params[name]`` holds that module's keyword arguments.

    ``build_augmentation(["gain", "remix"], gain={"low": 0.5})``. An empty list gives the identity.
    """
    names = [str(n) for n in (names or [])]
    unknown = [n for n in names if n not in AUGMENTATIONS]
    unknown += [f"{k} (in params)" for k in params if k not in AUGMENTATIONS]
    if unknown:
        raise ConfigError(
            f"unknown augmentation {', '.join(unknown)} (valid: {', '.join(AUGMENTATIONS)})"
        )
    modules = []
    for name in names:
        kwargs = dict(params.get(name) or {})
        try:
            modules.append(AUGMENTATIONS[name](**kwargs))
        except TypeError as exc:
            raise ConfigError(
                f"bad parameters for augmentation '{name}': {kwargs} ({exc})"
            ) from exc
    return nn.Sequential(*modules)


def augmentation_from_config(data_cfg: Any) -> nn.Module:
    """``build_augmentation`` from a data config's ``augmentations`` and ``augmentation_params``."""
    names = data_cfg.get("augmentations") or []
    params = data_cfg.get("augmentation_params") or {}
    return build_augmentation(
        list(names), **{str(k): dict(v or {}) for k, v in dict(params).items()}
    )
