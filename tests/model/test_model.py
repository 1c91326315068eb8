"""The Wave-U-Net reproduces the original's shapes and parameter counts exactly."""

import json

import pytest
import torch

from waveunet.cli import main as cli_main
from waveunet.errors import ConfigError
from waveunet.model.info import model_info
from waveunet.model.network import ShapeArithmetic, build_model, interpolate_upsample
from waveunet.settings.compose import compose

PAPER = {
    # preset: (input_samples, output_samples, parameters, sample_rate, sources)
    "m1": (16384, 16384, 10_263_028, 22050, 2),
    "m2": (16384, 16384, 10_263_002, 22050, 2),
    "m3": (147443, 16389, 10_263_002, 22050, 2),
    "m4": (147443, 16389, 10_263_390, 22050, 2),
    "m5": (147443, 16389, 10_265_550, 22050, 2),
    "m5_highsr": (147443, 16389, 10_265_550, 44100, 2),
    "m6": (147443, 16389, 10_263_498, 22050, 4),
}


@pytest.mark.parametrize("preset", sorted(PAPER))
def test_presets_match_the_paper(preset):
    info = model_info(compose("config", [f"model={preset}"]))
    inp, out, params, rate, n_sources = PAPER[preset]
    assert info["input_samples"] == inp
    assert info["output_samples"] == out
    assert info["parameters"] == params
    assert info["sample_rate"] == rate
    assert len(info["sources"]) == n_sources
    expected_type = "direct" if preset == "m1" else "difference"
    assert (info["output_type"], info["output_activation"]) == (expected_type, "tanh")


def test_info_command_prints_one_json_object(capsys):
    assert cli_main(["info", "model=m4"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info) == {
        "preset", "sample_rate", "channels", "sources", "output_type",
        "output_activation", "input_samples", "output_samples", "parameters",
    }
    assert (info["preset"], info["channels"]) == ("m4", 2)


def test_output_mode_composes_with_any_preset():
    info = model_info(compose("config", ["model=m5_highsr", "output=linear_direct"]))
    assert (info["output_type"], info["output_activation"]) == ("direct", "linear")
    # one more output convolution (26 channels in x 2 out + 2 biases) than difference
    assert info["parameters"] == 10_265_550 + 54
    info = model_info(compose("config", ["output=linear_direct", "model=m1"]))
    assert info["output_activation"] == "linear"


@pytest.mark.parametrize("levels,down,up", [(12, 15, 5), (5, 15, 5), (3, 7, 3), (1, 3, 3)])
def test_shape_arithmetic_is_consistent(levels, down, up):
    shapes = ShapeArithmetic(levels, down, up, context=True)
    for desired in [1, 2, 5, 100, 1000, 16384, 44100]:
        out = shapes.output_samples_for(desired)
        assert out >= desired
        inp = shapes.input_samples_for(desired)
        assert shapes.valid_output_for_input(inp) == out
        assert shapes.is_valid_input(inp)
        assert not shapes.is_valid_input(inp + 1)
        # the next shorter valid output needs a shorter input
        if out - 2**levels >= 1:
            assert shapes.input_samples_for(out - 2**levels) < inp
        assert (inp - out) % 2 == 0
        assert (inp - out) // 2 == shapes.context_samples()


def test_context_of_12_level_presets():
    assert ShapeArithmetic(12, 15, 5, context=True).context_samples() == 65527


def _tiny(output="tanh_difference", **model):
    cfg = compose(
        "config", ["model=tiny", f"output={output}"] + [f"model.{k}={v}" for k, v in model.items()]
    )
    return build_model(cfg.model, cfg.output)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"upsampling": "learned"},
        {"channels": 1},
        {"context": "false"},
        {"levels": 3, "down_kernel": 5},
    ],
)
def test_forward_shapes_follow_the_arithmetic(overrides):
    model = _tiny(**overrides)
    for desired in (1, 300, 4096):
        inp, out = model.input_samples_for(desired), model.output_samples_for(desired)
        y = model(torch.randn(2, model.config.channels, inp))
        assert y.estimates.shape == (2, 2, model.config.channels, out)
        assert y.unclipped.shape == y.estimates.shape
        assert y.pre_activation.shape == (2, 1, model.config.channels, out)


@pytest.mark.parametrize("preset", ["m1", "m4", "m5_highsr", "m6"])
def test_real_presets_run_at_their_smallest_valid_length(preset):
    cfg = compose("config", [f"model={preset}"])
    model = build_model(cfg.model, cfg.output).eval()
    out = model.output_samples_for(1)
    inp = model.input_samples_for(1)
    with torch.inference_mode():
        y = model(torch.zeros(1, model.config.channels, inp))
    assert y.estimates.shape == (1, len(model.sources), model.config.channels, out)


def test_invalid_input_length_names_the_valid_ones():
    model = _tiny()
    with pytest.raises(ValueError, match="not a valid length.*nearest valid lengths"):
        model(torch.zeros(1, 2, model.input_samples + 1))
    with pytest.raises(ValueError, match=r"\(batch, 2, samples\)"):
        model(torch.zeros(1, 1, model.input_samples))


def test_linear_upsampling_is_aligned_corner_interpolation():
    x = torch.tensor([[[0.0, 2.0, 4.0, 10.0]]])
    assert interpolate_upsample(x, 0.5, same=False).tolist() == [[[0, 1, 2, 3, 4, 7, 10]]]
    assert interpolate_upsample(x, 0.5, same=True).tolist() == [[[0, 1, 2, 3, 4, 7, 10, 10]]]
    # learned weight w: w * left + (1 - w) * right
    assert interpolate_upsample(x, 0.25, same=False)[0, 0, 1].item() == pytest.approx(1.5)


def test_learned_upsampling_weights_train():
    model = _tiny(upsampling="learned")
    y = model(torch.randn(1, 2, model.input_samples))
    y.estimates.square().mean().backward()
    grads = [p.grad for p in model.upsample_logits]
    assert len(grads) == model.config.levels
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_the_network_is_shift_equivariant_in_steps_of_2_to_the_levels():
    # the fact that makes seamless tiling exact: shifting the input by 2**L shifts the output
    model = _tiny(levels=3, down_kernel=5).eval()
    step = 2**model.config.levels
    out = model.output_samples_for(64)
    x = torch.randn(1, 2, model.input_samples_for(out) + step)
    with torch.inference_mode():
        a = model(x[..., :-step]).estimates
        b = model(x[..., step:]).estimates
    torch.testing.assert_close(a[..., step:], b[..., :-step], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "overrides,setting",
    [
        (["model=m9"], "model/m9"),
        (["output=softmax"], "output/softmax"),
        (["output.activation=softmax"], "output.activation"),
        (["output.low=1", "output.high=-1"], "output.low"),
        (["output.high=null"], "output.high"),
        (["model.output_samples=0"], "model.output_samples"),
        (["model.levels=-1"], "model.levels"),
        (["model.down_kernel=4"], "model.down_kernel"),
        (["model.upsampling=cubic"], "model.upsampling"),
        (["model.sources=[vocals]"], "model.sources"),
        (["model.levelz=3"], "model.levelz"),
    ],
)
def test_bad_configuration_names_the_setting(overrides, setting):
    with pytest.raises(ConfigError, match=setting.replace(".", r"\.")):
        model_info(compose("config", overrides))


def test_bad_configuration_exits_with_a_message(capsys):
    assert cli_main(["info", "model=m9"]) == 2
    err = capsys.readouterr().err
    assert "model/m9" in err and "m5_highsr" in err


def _reference_forward(model, mixture):
    """The architecture written plainly (slices instead of the fused decimate-and-crop)."""
    import torch.nn.functional as F

    from waveunet.model.network import centre_crop

    same = not model.config.context
    x, skips = mixture, []
    for conv in model.down:
        x = F.leaky_relu(conv(x), 0.2)
        skips.append(x)
        x = x[..., ::2]
    x = F.leaky_relu(model.bottleneck(x), 0.2)
    for i, conv in enumerate(model.up):
        weight = torch.sigmoid(model.upsample_logits[i]) if model.upsample_logits else 0.5
        x = interpolate_upsample(x, weight, same)
        x = torch.cat([centre_crop(skips[-i - 1], x.shape[-1]), x], dim=1)
        x = F.leaky_relu(conv(x), 0.2)
    mix = centre_crop(mixture, x.shape[-1])
    return model.head(torch.cat([mix, x], dim=1), mix)


@pytest.mark.parametrize(
    "overrides", [{}, {"context": "false"}, {"upsampling": "learned", "levels": 3}]
)
def test_fused_forward_matches_the_plain_architecture_with_gradients(overrides):
    model = _tiny(**overrides).double()
    x = torch.randn(2, 2, model.input_samples_for(300), dtype=torch.float64, requires_grad=True)
    ours = model(x)
    ours.estimates.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()] + [x.grad.clone()]
    model.zero_grad()
    x.grad = None
    ref = _reference_forward(model, x)
    ref.estimates.square().sum().backward()
    torch.testing.assert_close(ours.estimates, ref.estimates)
    for got, want in zip(grads, [p.grad for p in model.parameters()] + [x.grad], strict=True):
        torch.testing.assert_close(got, want)
