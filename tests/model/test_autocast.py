"""Mixed precision: every kind of model trains and runs inference under autocast, on the CPU too.

The GPU path is bf16/fp16 autocast; the same autocast rules run on the CPU, so a dtype
bug (learned upsampling's float32 weight meeting bf16 features) fails here without a GPU.
The convolutions must really run in the reduced precision: a "fix" that turns autocast
off fails :func:`test_every_kind_of_model_trains_under_bf16_autocast`. Only the output head's
kernel-1 convolutions run in float32, by design (``heads.OutputHead.forward``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import snr_db, tiny_model
from torch.overrides import TorchFunctionMode

from waveunet.model.network import build_model
from waveunet.settings.compose import compose

# What tells the paper's presets apart, on small models (the full sizes add nothing here):
# M1's mono direct outputs without context, M3's difference output with context, M4's stereo,
# M5's learned upsampling, M6's four sources.
KINDS = {
    "m1": dict(channels=1, output="direct", context=False),
    "m3": dict(channels=1),
    "m4": dict(channels=2),
    "m5": dict(channels=2, upsampling="learned"),
    "m6": dict(channels=2, sources=("bass", "drums", "other", "vocals")),
}


class ConvDtypes(TorchFunctionMode):
    """Records the output dtype of every 1D convolution called while active."""

    def __init__(self):
        super().__init__()
        self.dtypes: list[torch.dtype] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (F.conv1d, torch.conv1d):
            self.dtypes.append(out.dtype)
        return out


def assert_reduced_precision(model, dtypes: list[torch.dtype], dtype: torch.dtype) -> None:
    """The body's convolutions ran in ``dtype``, the output head's (its last ones) in float32."""
    head = len(model.head.convs)
    assert len(dtypes) >= 2 * model.config.levels + 1 + head
    assert set(dtypes[:-head]) == {dtype}
    assert dtypes[-head:] == [torch.float32] * head


def _model_and_input(kind: str, seed: int = 0):
    if kind in KINDS:
        model = tiny_model(filters=6, seed=seed, **KINDS[kind])
    else:  # a preset at its full size
        torch.manual_seed(seed)
        cfg = compose("train", [f"model={kind}"])
        model = build_model(cfg.model, cfg.output)
    n = model.input_samples_for(1)  # the smallest valid length
    mixture = 0.3 * torch.randn(2, model.config.channels, n)
    return model, mixture


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_model_trains_under_bf16_autocast(kind):
    model, mixture = _model_and_input(kind)
    reference = model(mixture).estimates.detach()
    record = ConvDtypes()
    with torch.autocast("cpu", dtype=torch.bfloat16), record:
        output = model(mixture)
    # every convolution of the network ran in bf16 (L down, skip-centre or full, the
    # bottleneck, L up), except the output convolutions, which run in float32 by design
    assert_reduced_precision(model, record.dtypes, torch.bfloat16)
    loss = output.estimates.float().square().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if model.upsample_logits:  # learned upsampling's weights get a gradient through the cast
        assert all(p.grad.abs().sum() > 0 for p in model.upsample_logits)
    # bf16 keeps 8 bits of mantissa: outputs within ~30 dB SNR of fp32 on random weights
    assert snr_db(reference, output.estimates.detach().float()) > 25.0


@pytest.mark.parametrize("kind", ("m4", "m5"))
def test_fp16_autocast_forward_and_backward(kind):
    model, mixture = _model_and_input(kind, seed=1)
    reference = model(mixture).estimates.detach()
    record = ConvDtypes()
    with torch.autocast("cpu", dtype=torch.float16), record:
        output = model(mixture)
    assert_reduced_precision(model, record.dtypes, torch.float16)
    output.estimates.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert snr_db(reference, output.estimates.detach().float()) > 40.0


@pytest.mark.parametrize("kind", ("m4", "m5"))
def test_eval_mode_inference_under_bf16_autocast(kind):
    model, mixture = _model_and_input(kind, seed=2)
    model.eval()
    with torch.inference_mode():
        reference = model(mixture).estimates
        with torch.autocast("cpu", dtype=torch.bfloat16):
            estimates = model(mixture).estimates.float()
    low, high = model.output_mode.bounds
    assert estimates.min() >= low and estimates.max() <= high  # the test-time clip still holds
    assert snr_db(reference, estimates) > 25.0


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ("bf16", "fp16"))
def test_cuda_training_step_under_autocast(precision):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    model, mixture = _model_and_input("m5_highsr", seed=3)
    model = model.cuda()
    mixture = mixture.cuda()
    reference = model(mixture).estimates.detach()
    record = ConvDtypes()
    with torch.autocast("cuda", dtype=dtype), record:
        output = model(mixture)
    assert_reduced_precision(model, record.dtypes, dtype)
    output.estimates.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert snr_db(reference, output.estimates.detach().float()) > 25.0
