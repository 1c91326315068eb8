"""waveunet.metrics against museval and against constructions with known answers."""

from __future__ import annotations

import json
import math

import museval
import numpy as np
import pytest
import torch
from museval.metrics import Framing

from waveunet.errors import ConfigError
from waveunet.files import safe_filename
from waveunet.metrics import (
    BssJob,
    aggregate_pooled,
    aggregate_tracks,
    bound_stats,
    bss_eval,
    clipping_stats,
    difference_error_share,
    evaluate_tracks,
    framewise_sdr,
    num_frames,
    silent_sources,
)

# Small frames keep museval fast; the frame rules do not depend on the window length.
WIN = 4000


def _museval_sdr(ref: np.ndarray, est: np.ndarray, win: int = WIN, hop: int = WIN) -> np.ndarray:
    return museval.evaluate(np.moveaxis(ref, 1, 2), np.moveaxis(est, 1, 2), win=win, hop=hop)[0]


def _signals(n_src: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = 0.3 * rng.standard_normal((n_src, 2, n))
    est = ref + 0.2 * rng.standard_normal((n_src, 2, n))
    return ref, est


@pytest.mark.parametrize(
    ("n", "win", "hop"),
    [
        (44100 * 3 + 7, 44100, 44100),
        (44100, 44100, 44100),
        (1000, 44100, 44100),
        (10_000, 4000, 1500),
        (8000, 4000, 4000),
        (7999, 4000, 4000),
    ],
)
def test_num_frames_follows_museval_framing(n: int, win: int, hop: int) -> None:
    assert num_frames(n, win, hop) == Framing(win, hop, n).nwin
    ref, est = _signals(1, n)
    assert framewise_sdr(ref, est, win=win, hop=hop).shape == (1, Framing(win, hop, n).nwin)


def test_partial_tail_is_dropped() -> None:
    ref, est = _signals(2, 3 * WIN + WIN // 2)
    base = framewise_sdr(ref, est, win=WIN, hop=WIN)
    est_bad_tail = est.copy()
    est_bad_tail[..., 3 * WIN:] = 5.0  # only the dropped partial frame changes
    assert base.shape == (2, 3)
    torch.testing.assert_close(framewise_sdr(ref, est_bad_tail, win=WIN, hop=WIN), base)


def test_sdr_equals_museval_with_silent_frames_and_wrong_lengths() -> None:
    n = 6 * WIN + 1234  # partial last frame
    ref, est = _signals(2, n, seed=1)  # two sources: museval's silence rule spans sources
    ref[1, :, WIN : 2 * WIN] = 0.0  # reference silent in frame 1
    est[1, :, 3 * WIN : 4 * WIN] = 0.0  # estimate silent in frame 3
    ref[0, 1, 4 * WIN : 5 * WIN] = -ref[0, 0, 4 * WIN : 5 * WIN]  # channels cancel in frame 4
    ref[0, 0, 5 * WIN + 10] = 0.0  # a single zero sample is not silence
    for est_len in (n, n - WIN - 300, n + 5000):  # truncated into frame 5, too long
        e = est[..., :est_len] if est_len <= n else np.concatenate(
            [est, 0.1 * np.ones((2, 2, est_len - n))], axis=-1
        )
        expected = _museval_sdr(ref, e)
        got = framewise_sdr(ref, e, win=WIN, hop=WIN).numpy()
        assert got.shape == expected.shape == (2, 6)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        # museval's rule: a silent frame of any source is NaN for every source
        assert np.isnan(got[:, [1, 3, 4]]).all()
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0, equal_nan=True)
    short = est[..., : 5 * WIN - 10]  # frame 5 is all padding: NaN
    got = framewise_sdr(ref, short, win=WIN, hop=WIN).numpy()
    assert np.isnan(got[:, 5]).all()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(_museval_sdr(ref, short)))


def test_mixture_as_every_estimate_matches_museval() -> None:
    ref, _ = _signals(2, 5 * WIN, seed=2)
    ref[0] *= 3.0
    mix = ref.sum(axis=0)
    est = np.stack([mix, mix])
    expected = _museval_sdr(ref, est)
    got = framewise_sdr(ref, est, win=WIN, hop=WIN).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert (got[0] > got[1]).all()  # the louder source is closer to the mixture


def test_torch_float32_input_and_device() -> None:
    ref, est = _signals(2, 3 * WIN, seed=3)
    ref32, est32 = ref.astype(np.float32), est.astype(np.float32)
    got = framewise_sdr(torch.from_numpy(ref32), torch.from_numpy(est32), win=WIN, hop=WIN)
    assert got.dtype == torch.float64 and got.device == torch.device("cpu")
    np.testing.assert_allclose(got.numpy(), _museval_sdr(ref32, est32), atol=1e-6, rtol=0)
    if torch.cuda.is_available():
        gpu = framewise_sdr(
            torch.from_numpy(ref32).cuda(), torch.from_numpy(est32).cuda(), win=WIN, hop=WIN
        )
        assert gpu.is_cuda
        torch.testing.assert_close(gpu.cpu(), got)


def test_perfect_frame_is_inf_and_overlapping_frames() -> None:
    ref, est = _signals(2, 10_000, seed=4)
    est[:, :, :4000] = ref[:, :, :4000]
    sdr = framewise_sdr(ref, est, win=4000, hop=1500)
    assert math.isinf(sdr[0, 0].item()) and sdr[0, 0] > 0
    assert torch.isfinite(sdr[:, 3:]).all()
    np.testing.assert_allclose(
        sdr[:, 3:].numpy(), _museval_sdr(ref, est, 4000, 1500)[:, 3:], atol=1e-6
    )


def test_bss_eval_wrapper_and_parallel_json(tmp_path) -> None:
    ref, est = _signals(2, 3 * WIN, seed=5)
    scores = bss_eval(ref, est, sample_rate_hz=WIN)
    assert set(scores) == {"SDR", "ISR", "SIR", "SAR"}
    assert all(v.shape == (2, 3) for v in scores.values())
    np.testing.assert_allclose(
        scores["SDR"], framewise_sdr(ref, est, win=WIN, hop=WIN).numpy(), atol=1e-6
    )

    ref2, est2 = _signals(2, 2 * WIN, seed=6)
    jobs = [BssJob("a/b", ["accompaniment", "vocals"], ref, est),
            lambda: BssJob("two", ["accompaniment", "vocals"], ref2, est2)]
    out = evaluate_tracks(jobs, WIN, json_dir=tmp_path, workers=2, progress=False)
    assert set(out) == {"a/b", "two"}
    np.testing.assert_allclose(out["a/b"]["SIR"], scores["SIR"], atol=1e-9)
    with open(tmp_path / "a_b.json") as f:
        doc = json.load(f)  # museval's schema: targets -> frames -> metrics
    assert [t["name"] for t in doc["targets"]] == ["accompaniment", "vocals"]
    frames = doc["targets"][1]["frames"]
    assert [fr["time"] for fr in frames] == [0, 1, 2]
    np.testing.assert_allclose([fr["metrics"]["SDR"] for fr in frames], scores["SDR"][1], atol=1e-5)
    assert (tmp_path / "two.json").exists()
    assert not list(tmp_path.glob(".tmp-*"))


def test_bss_eval_rejects_silent_source() -> None:
    ref, est = _signals(2, 2 * WIN)
    est[1] = 0.0
    with pytest.raises(ConfigError, match="estimates"):
        bss_eval(ref, est, sample_rate_hz=WIN)


def test_silent_sources_and_safe_filename() -> None:
    x = np.ones((3, 2, 10))
    x[1] = 0.0
    x[2, 0], x[2, 1] = 1.0, -1.0  # channel sum zero: museval calls it silent
    assert silent_sources(x) == [1, 2] and silent_sources(torch.ones(1, 1, 4)) == []
    assert safe_filename("a/b: c") == "a_b_ c" and safe_filename("..") == "track"


def test_clipping_stats_takes_bound_statistics_from_elsewhere() -> None:
    ref = np.full((1, 1, 8), 0.5)
    est = np.array([[[1.0, -1.0, 0.995, 0.2, 0.2, 0.2, 0.2, 0.2]]])
    raw = est * np.array([1.5, 1.2, 1, 1, 1, 1, 1, 1])
    own = clipping_stats(est, ref, raw=raw)[0]
    b = bound_stats(est, raw)[0]
    assert b["clipped_count"] == 2 and b["saturated_count"] == 3 and b["overshoot_count"] == 2
    assert own["overshoot_count"] == 2 and own["overshoot_mean"] == pytest.approx(0.35)
    assert own["fraction_saturated"] == pytest.approx(3 / 8) and own["saturated_count"] == 3
    # model-rate statistics (e.g. a clean output before resampling) replace the bound keys only
    clean = bound_stats(np.full((1, 1, 4), 0.5), np.full((1, 1, 4), 0.5))
    given = clipping_stats(est, ref, raw=raw, bound_statistics=clean)[0]
    assert given["fraction_clipped"] == 0 and given["fraction_saturated"] == 0
    assert given["overshoot_count"] == 0 and given["overshoot_mean"] is None
    assert given["peak_ratio"] == own["peak_ratio"] and given["n_samples"] == 8
    with pytest.raises(ConfigError, match="bound_statistics"):
        clipping_stats(est, ref, bound_statistics=clean * 2)


def test_aggregations_known_answers() -> None:
    tracks = [np.array([0.0, 1.0, 2.0]), np.array([10.0, np.nan, np.inf])]
    pooled = aggregate_pooled(tracks)  # pooled finite frames: 0, 1, 2, 10
    assert pooled["median"] == 1.5
    assert pooled["mad"] == 1.0  # |x - 1.5| = 1.5, .5, .5, 8.5
    assert pooled["mean"] == 3.25
    assert pooled["std"] == pytest.approx(math.sqrt((3.25**2 + 2.25**2 + 1.25**2 + 6.75**2) / 4))
    assert (pooled["n_frames"], pooled["n_nan_frames"], pooled["n_inf_frames"]) == (4, 1, 1)
    per_track = aggregate_tracks(tracks + [np.array([np.nan])])
    assert per_track["track_medians"] == [1.0, 10.0, None]
    assert per_track["median"] == 5.5 and per_track["mean"] == 5.5 and per_track["n_tracks"] == 2
    json.dumps(pooled, allow_nan=False)
    json.dumps(per_track, allow_nan=False)


def _ramp(n: int = 200_001) -> np.ndarray:
    """(1, 2, n) uniform ramp over [-1, 1]: fractions of samples are lengths of intervals."""
    x = np.linspace(-1.0, 1.0, n)
    return np.stack([x, x[::-1]])[None]


def test_clipping_stats_clipped_linear_output() -> None:
    ref = _ramp()
    raw = 1.5 * ref  # overshoots the bound on |x| > 2/3
    est = np.clip(raw, -1.0, 1.0)
    (s,) = clipping_stats(est, ref, raw=raw, activation="linear")
    assert s["fraction_clipped"] == pytest.approx(1 / 3, abs=1e-4)
    assert s["fraction_overshoot"] == pytest.approx(1 / 3, abs=1e-4)
    assert s["overshoot_mean"] == pytest.approx(0.25, abs=1e-4)  # 1.5|x| - 1 over |x| in (2/3, 1]
    assert s["overshoot_max"] == pytest.approx(0.5)
    assert s["peak_ratio"] == pytest.approx(1.0) and s["peak_ratio_db"] == pytest.approx(
        0.0, abs=1e-9
    )
    # on the loud samples |x| >= 0.5 the estimate (1.5x, or 1 once clipped) exceeds |x|: g < 1
    assert s["loud_gain"] < 1.0
    assert s["fraction_loud"] == pytest.approx(0.5, abs=1e-4)


def test_clipping_stats_scaled_copy_and_no_raw() -> None:
    ref = 0.9 * _ramp()
    (s,) = clipping_stats(0.5 * ref, ref)
    assert s["loud_gain"] == pytest.approx(2.0)
    assert s["loud_gain_db"] == pytest.approx(20 * math.log10(2.0))
    assert s["rms_ratio"] == pytest.approx(0.5) and s["peak_ratio"] == pytest.approx(0.5)
    assert s["rms_ratio_db"] == pytest.approx(20 * math.log10(0.5))
    assert s["fraction_clipped"] == 0.0 and s["fraction_saturated"] == 0.0
    assert s["fraction_overshoot"] is None and s["overshoot_max"] is None
    # a copy at full scale touches the bound only at the two end samples per channel
    (full,) = clipping_stats(_ramp(1001), _ramp(1001))
    assert full["fraction_clipped"] == pytest.approx(2 / 1001)


def test_clipping_stats_tanh_attenuation_and_saturation() -> None:
    ref = _ramp()
    (att,) = clipping_stats(np.tanh(ref), ref, raw=np.tanh(ref), activation="tanh")
    assert att["peak_ratio"] == pytest.approx(math.tanh(1.0))
    assert att["loud_gain"] > 1.0  # tanh attenuates loud passages
    assert att["fraction_clipped"] == 0.0 and att["fraction_overshoot"] == 0.0
    assert att["activation"] == "tanh"
    # pre-activation 3x: saturated where |3x| > atanh(0.99)
    sat_est = np.tanh(3.0 * ref)
    (sat,) = clipping_stats(sat_est, ref, activation="tanh")
    assert sat["fraction_saturated"] == pytest.approx(1 - math.atanh(0.99) / 3.0, abs=1e-4)
    assert sat["fraction_clipped"] == 0.0


def test_clipping_stats_asymmetric_bounds_and_per_source() -> None:
    ref = np.concatenate([_ramp(1001), 0.25 * _ramp(1001)])  # 2 sources
    est = ref * 2.0 + 1.0  # bounds (-1, 3): centre 1, half width 2 -> same as ref*1 in units
    stats = clipping_stats(est, ref * 2.0 + 1.0, bounds=(-1.0, 3.0))
    assert len(stats) == 2
    assert stats[0]["fraction_clipped"] == pytest.approx(2 / 1001)
    assert stats[1]["fraction_clipped"] == 0.0
    assert stats[1]["fraction_loud"] == 0.0 and stats[1]["loud_gain"] is None


def test_difference_error_share_known_answers() -> None:
    rng = np.random.default_rng(7)
    ref = 0.3 * rng.standard_normal((3, 2, 20_000))
    mix = ref.sum(axis=0)
    gains = np.array([1.25, 1.6])
    est = ref.copy()
    est[:2] = ref[:2] / gains[:, None, None]  # predicted sources only attenuated
    est[2] = mix - est[:2].sum(axis=0)  # difference output
    d = difference_error_share(est, ref)
    assert d["explained_share"] == pytest.approx(1.0)
    np.testing.assert_allclose(d["gains"], gains, rtol=1e-9)
    assert d["sdr_gain_corrected_db"] is None or d["sdr_gain_corrected_db"] > 100
    # error of the difference source that is independent of the others: nothing explained
    est2 = ref.copy()
    est2[2] += 0.1 * rng.standard_normal((2, 20_000))
    d2 = difference_error_share(est2, ref)
    assert d2["explained_share"] < 0.01
    assert d2["sdr_db"] == pytest.approx(
        10 * math.log10(np.sum(ref[2] ** 2) / np.sum((est2[2] - ref[2]) ** 2))
    )


def test_errors_name_the_argument() -> None:
    ref, est = _signals(2, 3 * WIN)
    with pytest.raises(ConfigError, match="estimates"):
        framewise_sdr(ref, est[:1])
    with pytest.raises(ConfigError, match="references"):
        framewise_sdr(ref[0], est)
    with pytest.raises(ConfigError, match="win"):
        framewise_sdr(ref, est, win=0)
    with pytest.raises(ConfigError, match="bounds"):
        clipping_stats(est, ref, bounds=(1.0, -1.0))
    with pytest.raises(ConfigError, match="raw"):
        clipping_stats(est, ref, raw=est[:1])
    with pytest.raises(ValueError, match="difference_index"):
        difference_error_share(est, ref, difference_index=5)
