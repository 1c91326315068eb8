"""Figures: what they draw (values, axes, legends), not only that a file was written."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_rgb

from waveunet.reporting import figures
from waveunet.reporting.format import plural

RATE = 8000


def _passage(raw: bool = True) -> figures.Passage:
    rng = np.random.default_rng(0)
    refs = 0.5 * rng.standard_normal((2, 2, 3 * RATE)).clip(-1.5, 1.5)
    refs[:, :, RATE:RATE + RATE // 2] *= 1.8  # the loudest half second
    out = 1.2 * refs
    ests = out.clip(-1, 1)
    return figures.Passage.loudest("Song's (Live)", ["accompaniment", "vocals"], refs, ests,
                                   out if raw else None, RATE, 0.5)


def _line(ax, label: str) -> np.ndarray:
    (line,) = [x for x in ax.get_lines() if x.get_label() == label]
    return np.asarray(line.get_ydata())


def test_waveform_overlays_estimate_on_reference_on_shared_limits() -> None:
    p = _passage()
    assert p.start == RATE and p.length == RATE // 2
    fig = figures.waveform_figure(p, (-1.0, 1.0))
    axes = fig.axes
    assert len(axes) == 2  # one panel per source, estimate over reference
    for s, ax in enumerate(axes):
        np.testing.assert_array_equal(_line(ax, "reference"), p.references[s, 0, RATE:RATE + 4000])
        np.testing.assert_array_equal(_line(ax, "estimate"), p.estimates[s, 0, RATE:RATE + 4000])
        np.testing.assert_array_equal(_line(ax, "raw output (before the test-time clip)"),
                                      p.raw[s, 0, RATE:RATE + 4000])
        assert ax.get_ylim() == axes[0].get_ylim()
    top = axes[0].get_ylim()[1]
    assert top >= np.abs(p.raw[:, 0, RATE:RATE + 4000]).max()  # nothing drawn off the axes
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert {"reference", "estimate", "estimate at/beyond a bound"} <= set(labels)
    assert len(labels) == len(set(labels)) and legend.get_texts()[0].get_fontsize() >= 9
    for ax in axes:  # the estimate above a lighter, thinner reference; marks above both
        (ref,) = [x for x in ax.get_lines() if x.get_label() == "reference"]
        (est,) = [x for x in ax.get_lines() if x.get_label() == "estimate"]
        assert est.get_zorder() > ref.get_zorder() and est.get_linewidth() > ref.get_linewidth()
        assert np.mean(to_rgb(ref.get_color())) > np.mean(to_rgb("black"))
        assert all(c.get_zorder() > est.get_zorder() for c in ax.collections)
    figures.pyplot().close(fig)


def test_the_waveform_legend_lists_only_what_is_drawn() -> None:
    p = _passage()
    quiet = figures.Passage(p.track_name, p.source_names, 0.5 * p.references,
                            0.5 * p.references, 0.5 * p.references, p.sample_rate_hz, p.start,
                            p.length, p.channel)  # nothing near the bounds
    fig = figures.waveform_figure(quiet, (-1.0, 1.0))
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "raw output (before the test-time clip)", "reference", "estimate"]
    assert not any(ax.collections for ax in fig.axes)  # no red dots, no empty ones either
    figures.pyplot().close(fig)


def test_spectrogram_panels_are_reference_and_estimate_on_a_log_frequency_axis() -> None:
    p = _passage(raw=False)
    fig = figures.spectrogram_figure(p)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == [
        "accompaniment: reference", "accompaniment: estimate", "vocals: reference",
        "vocals: estimate"]
    for ax in panels:
        assert ax.get_yscale() in ("log", "symlog")
        (image,) = ax.collections
        values = np.asarray(image.get_array())
        assert values.max() <= 0.0 + 1e-6 and np.isfinite(values).all()
    # one colour scale for reference and estimate: the louder of the two is 0 dB
    for ref, est in (panels[0:2], panels[2:4]):
        peaks = [np.asarray(ax.collections[0].get_array()).max() for ax in (ref, est)]
        assert max(peaks) == pytest.approx(0.0, abs=1e-4)
    figures.pyplot().close(fig)


def _spread(values) -> dict:
    v = np.asarray(values, float)
    return {"mean": v.mean(), "std": v.std(ddof=1), "min": v.min(), "max": v.max(), "n": v.size,
            "values": list(v)}


def test_the_comparison_figure_shows_differences_not_bars_from_zero() -> None:
    modes, sources = ["tanh", "linear"], ["accompaniment", "vocals"]
    base = {"accompaniment": 11.0, "vocals": 4.0}
    seeds = np.array([0.0, 0.1, -0.1])
    table = {s: {m: {"k": _spread(base[s] + seeds + (0.3 if m == "linear" else 0.0))}
                 for m in modes} for s in sources}
    paired = {s: {"linear": {"k": _spread([0.3, 0.31, 0.29])}} for s in sources}
    fig = figures.sdr_by_mode_figure({"sources": sources, "table": table,
                                      "paired_vs_first_mode": paired}, modes, [("k", "pooled")])
    top, bottom = fig.axes[:2]
    low, high = top.get_ylim()
    assert 3.0 < low < 4.0 and 11.0 < high < 12.5  # fitted to the values, not from 0
    points = np.concatenate([c.get_offsets()[:, 1] for c in bottom.collections
                             if isinstance(c, PathCollection)])  # the seeds' dots
    np.testing.assert_allclose(sorted(points), sorted([0.3, 0.31, 0.29] * 2))
    assert bottom.get_title() == "paired difference to tanh"
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == modes  # each mode once
    figures.pyplot().close(fig)


def test_plural() -> None:
    assert [plural(n, "track") for n in (0, 1, 2)] == ["0 tracks", "1 track", "2 tracks"]
    assert plural(3, "child", "children") == "3 children"
