"""Bounded output heads: bounds, gradients, and the difference output."""

import itertools

import pytest
import torch

from waveunet.model.heads import ACTIVATIONS, OUTPUT_TYPES, OutputBounds, OutputHead, OutputMode

TWO_SIDED = [name for name, cls in ACTIVATIONS.items() if cls.two_sided]
ONE_SIDED = [name for name, cls in ACTIVATIONS.items() if not cls.two_sided]


def activation(name, low=-1.0, high=1.0):
    return ACTIVATIONS[name](OutputBounds(low, high))


def grad_at(name, a, train=True, **bounds):
    act = activation(name, **bounds).train(train)
    a = torch.tensor(a, requires_grad=True)
    act(a).sum().backward()
    return a.grad


def head_output(output_type, act, low=-1.0, high=1.0, train=False, scale=3.0):
    torch.manual_seed(0)
    head = OutputHead(6, channels=2, num_sources=3, mode=OutputMode(output_type, act, low, high))
    features = scale * torch.randn(2, 6, 50)
    mixture = scale * torch.randn(2, 2, 50)
    return head.train(train)(features, mixture), mixture


@pytest.mark.parametrize("output_type,act", list(itertools.product(OUTPUT_TYPES, ACTIVATIONS)))
def test_every_mode_has_the_right_shapes(output_type, act):
    y, _ = head_output(output_type, act, high=None if act in ONE_SIDED else 1.0)
    assert y.estimates.shape == (2, 3, 2, 50)
    assert y.unclipped.shape == (2, 3, 2, 50)
    predicted = 2 if output_type == "difference" else 3
    assert y.pre_activation.shape == (2, predicted, 2, 50)


@pytest.mark.parametrize(
    "output_type,act,low,high",
    [
        (t, a, lo, hi)
        for t in OUTPUT_TYPES
        for a in TWO_SIDED
        for lo, hi in [(-1.0, 1.0), (0.0, 0.5)]
    ],
)
def test_eval_outputs_never_leave_the_bounds(output_type, act, low, high):
    y, _ = head_output(output_type, act, low, high, train=False, scale=5.0)
    assert y.estimates.min() >= low and y.estimates.max() <= high


@pytest.mark.parametrize("act", ONE_SIDED)
def test_one_sided_activations_bound_below_only(act):
    y, _ = head_output("direct", act, low=0.0, high=None, train=True, scale=5.0)
    assert y.estimates.min() >= 0.0
    assert y.estimates.max() > 1.0  # nothing bounds it above


def test_linear_is_unbounded_in_training_and_clipped_at_eval():
    y_train, _ = head_output("direct", "linear", train=True, scale=5.0)
    assert y_train.estimates.abs().max() > 1.0
    y_eval, _ = head_output("direct", "linear", train=False, scale=5.0)
    assert y_eval.estimates.abs().max() <= 1.0
    torch.testing.assert_close(y_eval.unclipped, y_train.estimates)
    torch.testing.assert_close(y_eval.estimates, y_train.estimates.clamp(-1, 1))


def test_tanh_never_reaches_the_bounds_but_sin_and_clip_do():
    a = torch.tensor([-3.0, 3.0, 8.0])
    assert (activation("tanh")(a).abs() < 1).all()  # (float32 rounds tanh(a) to 1 from a ~ 9.01)
    assert activation("sin")(torch.tensor([torch.pi / 2])).item() == pytest.approx(1.0)
    assert activation("clip")(a).abs().max().item() == 1.0


def test_tanh_gradient_vanishes_when_saturated():
    g = grad_at("tanh", [0.0, 2.0, 5.0, 10.0])
    assert g[0] == pytest.approx(1.0)
    assert g[1] < 0.1 and g[2] < 1e-3 and g[3] < 1e-7
    assert (g[1:] < g[:-1]).all()


def test_clip_gradient_is_exactly_zero_outside_the_bounds():
    g = grad_at("clip", [-3.0, -0.5, 0.5, 1.5])
    assert g.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_linear_gradient_stays_one_in_training_while_eval_stays_in_bounds():
    g = grad_at("linear", [-30.0, 0.0, 1.4, 30.0], train=True)
    assert g.tolist() == [1.0, 1.0, 1.0, 1.0]
    out = activation("linear").eval()(torch.tensor([-30.0, 0.3, 1.4]))
    assert out.tolist() == pytest.approx([-1.0, 0.3, 1.0])


def test_relu_gradient_is_zero_below_the_bound_softplus_only_decays():
    assert grad_at("relu", [-2.0, 0.5], low=0.0, high=None).tolist() == [0.0, 1.0]
    g = grad_at("softplus", [-10.0, 0.0, 10.0], low=0.0, high=None)
    assert 0 < g[0] < 1e-4 and g[1] == pytest.approx(0.5) and g[2] > 0.99


def test_bounds_scale_to_a_general_interval():
    for name in ("tanh", "sigmoid", "sin"):
        act = activation(name, low=2.0, high=4.0)
        assert act(torch.tensor([0.0])).item() == pytest.approx(3.0)
        y = act(torch.linspace(-20, 20, 101))
        assert y.min() >= 2.0 and y.max() <= 4.0


@pytest.mark.parametrize("act", ["tanh", "sigmoid"])
def test_logits_map_the_output_to_the_unit_interval(act):
    a = torch.linspace(-4, 4, 9)
    head = activation(act, low=-1.0, high=3.0)
    y01 = (head(a) + 1.0) / 4.0
    torch.testing.assert_close(torch.sigmoid(head.logits(a)), y01)


@pytest.mark.parametrize("act", TWO_SIDED)
def test_difference_stems_sum_to_the_mixture_before_clipping(act):
    for train in (True, False):
        y, mixture = head_output("difference", act, train=train, scale=3.0)
        torch.testing.assert_close(y.unclipped.sum(dim=1), mixture)
        if train:
            torch.testing.assert_close(y.estimates.sum(dim=1), mixture)


def test_difference_source_is_clipped_at_eval_like_the_original():
    y, mixture = head_output("difference", "tanh", train=False, scale=3.0)
    last = mixture - y.estimates[:, :-1].sum(dim=1)
    assert last.abs().max() > 1.0  # the mixture is loud: clipping matters here
    torch.testing.assert_close(y.estimates[:, -1], last.clamp(-1, 1))


def test_bad_output_modes_name_the_setting():
    with pytest.raises(ValueError, match="output.type"):
        OutputMode("sum", "tanh")
    with pytest.raises(ValueError, match="output.activation"):
        OutputMode("direct", "gelu")
    with pytest.raises(ValueError, match=r"output.low \(1.0\) must be below output.high"):
        OutputMode("direct", "tanh", 1.0, 1.0)
    with pytest.raises(ValueError, match="needs at least 2"):
        OutputHead(4, 2, 1, OutputMode("difference", "tanh"))


def test_health_counts_outputs_beyond_the_bounds_for_clip_and_linear():
    from waveunet.model.heads import ModelOutput, output_health

    pre = torch.tensor([-3.0, -0.5, 0.5, 3.0]).reshape(1, 1, 1, 4)
    targets = torch.full((1, 1, 1, 4), 0.5)
    for act in ("clip", "linear"):
        head = OutputHead(1, 1, 1, OutputMode("direct", act)).train()
        y = head.activation.train_output(pre)
        health = output_health(ModelOutput(y, y, pre), targets, head)
        assert health["saturated"] == 0.5, act  # two of four samples are beyond +-1
    head = OutputHead(1, 1, 1, OutputMode("direct", "clip"))
    y = head.activation.train_output(pre)
    assert output_health(ModelOutput(y, y, pre), targets, head)["vanishing_gradient"] == 0.5


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "sin"])
def test_reference_slope_is_the_activations_slope_at_the_centre(name):
    act = activation(name, low=2.0, high=4.0)
    a = torch.zeros(1, requires_grad=True)  # a = 0 maps to the interval's centre
    act.train_output(a).sum().backward()
    assert act.train_output(torch.zeros(1)).item() == pytest.approx(3.0)
    assert a.grad.item() == pytest.approx(act.reference_slope())


def test_the_head_clips_at_test_time_by_its_activations_rule():
    for name in ACTIVATIONS:
        high = None if name in ONE_SIDED else 1.0
        y, _ = head_output("direct", name, high=high, train=False, scale=5.0)
        act = activation(name, high=high)
        torch.testing.assert_close(y.estimates, act.test_time_output(y.unclipped))
        if high is not None:  # loud features: a clip at test time changes some outputs
            assert torch.equal(y.estimates, y.unclipped) != act.clips_at_eval
