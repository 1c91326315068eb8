from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from waveunet.data.augment import augmentation_from_config, build_augmentation
from waveunet.errors import ConfigError


@pytest.fixture
def stems() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(16, 4, 2, 50)


@pytest.mark.parametrize("name", ["gain", "channelswap", "signflip", "remix"])
def test_each_is_identity_in_eval_mode_and_changes_in_train(name: str, stems: torch.Tensor) -> None:
    module = build_augmentation([name])
    out = module(stems)
    assert out.shape == stems.shape and not torch.equal(out, stems)
    module.eval()
    assert torch.equal(module(stems), stems)


def test_gain_per_source_in_range(stems: torch.Tensor) -> None:
    out = build_augmentation(["gain"], gain={"low": 0.7, "high": 1.0})(stems)
    ratio = out / stems
    per_source = ratio[..., :1, :1]
    # one gain per (example, source)
    assert torch.allclose(ratio, per_source.expand_as(ratio), atol=1e-5)
    assert per_source.min() >= 0.7 - 1e-6 and per_source.max() <= 1.0 + 1e-6
    assert per_source.flatten().unique().numel() > 32  # independent draws
    with pytest.raises(ConfigError, match="gain"):
        build_augmentation(["gain"], gain={"low": 1.0, "high": 0.5})


def test_channelswap_and_signflip_act_per_source(stems: torch.Tensor) -> None:
    swapped = build_augmentation(["channelswap"])(stems)
    same = (swapped == stems).flatten(2).all(-1)
    flipped = (swapped == stems.flip(2)).flatten(2).all(-1)
    assert (same | flipped).all() and same.any() and flipped.any()
    mono = torch.randn(4, 2, 1, 10)
    assert torch.equal(build_augmentation(["channelswap"])(mono), mono)
    signs = build_augmentation(["signflip"])(stems)
    kept, negated = (signs == stems).flatten(2).all(-1), (signs == -stems).flatten(2).all(-1)
    assert (kept | negated).all() and kept.any() and negated.any()


def test_remix_shuffles_each_source_within_its_group(stems: torch.Tensor) -> None:
    out = build_augmentation(["remix"])(stems)  # group_size 4 by default
    group = torch.arange(stems.shape[0]) // 4
    for s in range(stems.shape[1]):
        # Every output stem is one of its group's stems of the same source, each used once.
        match = (out[:, s, None] == stems[None, :, s]).flatten(2).all(-1)  # (B_out, B_in)
        assert (match.sum(1) == 1).all() and (match.sum(0) == 1).all()
        assert torch.equal(group[match.float().argmax(1)], group)
    assert not torch.equal(out, stems)
    sources_from = [
        (out[:, s, None] == stems[None, :, s]).flatten(2).all(-1).float().argmax(1)
        for s in range(4)
    ]
    # independent per source
    assert not all(torch.equal(sources_from[0], other) for other in sources_from[1:])


def test_composition_and_config(stems: torch.Tensor) -> None:
    cfg = OmegaConf.create(
        {
            "augmentations": ["gain", "signflip"],
            "augmentation_params": {"gain": {"low": 0.5, "high": 0.5}},
        }
    )
    module = augmentation_from_config(cfg)
    assert [type(m).__name__ for m in module] == ["Gain", "SignFlip"]
    out = module(stems)
    assert torch.allclose(out.abs(), 0.5 * stems.abs())
    assert torch.equal(build_augmentation([])(stems), stems)


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="pitchshift.*valid: gain, channelswap, signflip, remix"):
        build_augmentation(["gain", "pitchshift"])
    with pytest.raises(ConfigError, match="bad parameters.*remix"):
        build_augmentation(["remix"], remix={"p": 0.3})


@pytest.mark.parametrize("name", ["channelswap", "signflip"])
@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_probability_outside_0_1_is_a_config_error(name: str, p: float) -> None:
    with pytest.raises(ConfigError, match="p="):
        build_augmentation([name], **{name: {"p": p}})


def test_channelswap_checks_the_shape_first() -> None:
    module = build_augmentation(["channelswap"]).train()
    with pytest.raises(ValueError, match="batch, sources, channels, samples"):
        module(torch.zeros(2, 50))
    mono = torch.randn(3, 4, 1, 20)
    assert torch.equal(module(mono), mono)


def test_remix_partners_come_from_a_fixed_group_whatever_the_process_count(
    stems: torch.Tensor,
) -> None:
    """Groups of 4 consecutive examples of the global batch: 1 process with all 16 examples
    and 4 processes with 4 each draw partners from the same groups."""
    module = build_augmentation(["remix"], remix={"group_size": 4})
    for batch in (stems, stems[:4], stems[8:12]):  # a whole batch, or one process's share
        out = module(batch)
        for s in range(batch.shape[1]):
            match = (out[:, s, None] == batch[None, :, s]).flatten(2).all(-1)  # (B_out, B_in)
            partner = match.float().argmax(1)
            assert (match.sum(1) == 1).all()
            assert torch.equal(partner // 4, torch.arange(batch.shape[0]) // 4)
    with pytest.raises(ValueError, match="whole groups of 4"):
        module(stems[:6])


def test_remix_group_size_must_divide_each_process_batch() -> None:
    from waveunet.data.augment import check_batch

    module = build_augmentation(["gain", "remix"], remix={"group_size": 4})
    check_batch(module, 8)
    with pytest.raises(ConfigError, match="remix.group_size=4 must divide"):
        check_batch(module, 6)
    with pytest.raises(ConfigError, match="group_size"):
        build_augmentation(["remix"], remix={"group_size": 0})
