"""waveunet.reporting.evaluation: files written, their content, never clobbering foreign files."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from waveunet.folders import ONLY_OURS, OVERWRITE_CLEARS, guard_out_dir
from waveunet.metrics import clipping_stats, difference_error_share, framewise_sdr
from waveunet.reporting.evaluation import TrackResult, WaveformSpec, build_summary, write_report
from waveunet.reporting.figures import loudest_passage

RATE = 4000
SOURCES = ["accompaniment", "vocals"]


def _track(name: str, seed: int) -> tuple[TrackResult, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = (0.4 * rng.standard_normal((2, 2, 5 * RATE))).clip(-0.99, 0.99)
    ref[1, :, RATE : 2 * RATE] = 0.0  # a silent vocal second -> NaN frame
    raw = 1.3 * ref  # a linear output that overshoots on loud samples
    est = np.clip(raw, -1.0, 1.0)
    res = TrackResult(
        name=name,
        source_names=SOURCES,
        sdr_frames=framewise_sdr(ref, est, win=RATE, hop=RATE),
        clipping=dict(
            zip(SOURCES, clipping_stats(est, ref, raw=raw, activation="linear"), strict=True)
        ),
        difference=difference_error_share(est, ref),
    )
    return res, ref, est, raw


def _strict_load(path) -> dict:
    def reject(token: str) -> None:
        raise AssertionError(f"non-standard JSON token {token}")

    with open(path) as f:
        return json.load(f, parse_constant=reject)


def test_write_report_files_and_content(tmp_path) -> None:
    (a, ref, est, raw), (b, *_) = _track("Song A", 1), _track("Song/B", 2)
    (tmp_path / "notes.txt").write_text("mine")
    summary = write_report(
        tmp_path,
        [a, b],
        meta={"checkpoint": "m.pt", "output_mode": "linear_clip"},
        waveform=WaveformSpec("Song A", ref, est, RATE, raw=raw),
    )
    doc = _strict_load(tmp_path / "summary.json")
    assert doc == summary
    assert doc["meta"]["output_mode"] == "linear_clip" and doc["sources"] == SOURCES
    for s in SOURCES:
        frames = np.concatenate([a.frames()[SOURCES.index(s)], b.frames()[SOURCES.index(s)]])
        pooled = doc["aggregates"]["SDR"][s]["pooled_frames"]
        assert pooled["median"] == pytest.approx(np.nanmedian(frames))
        assert pooled["n_frames"] == np.isfinite(frames).sum() == 8
        tr = doc["aggregates"]["SDR"][s]["median_of_track_medians"]
        meds = [np.nanmedian(t.frames()[SOURCES.index(s)]) for t in (a, b)]
        assert tr["median"] == pytest.approx(np.median(meds))
        assert tr["track_medians"] == pytest.approx(meds)
    track_a = doc["tracks"][0]
    assert track_a["metrics"]["SDR"]["vocals"]["frames"][1] is None  # NaN frame -> null
    assert track_a["clipping"]["vocals"]["fraction_clipped"] == pytest.approx(
        a.clipping["vocals"]["fraction_clipped"]
    )
    # fractions over tracks are sample-weighted; equal lengths -> the plain mean
    assert doc["clipping"]["accompaniment"]["fraction_clipped"] == pytest.approx(
        (
            a.clipping["accompaniment"]["fraction_clipped"]
            + b.clipping["accompaniment"]["fraction_clipped"]
        )
        / 2
    )
    assert doc["clipping"]["accompaniment"]["fraction_clipped"] > 0
    assert track_a["difference"]["explained_share"] is not None

    md = (tmp_path / "report.md").read_text()
    assert "## SDR (dB)" in md and "pooled median" in md and "median of track medians" in md
    assert "## Clipping" in md and "| accompaniment |" in md and "| vocals |" in md
    assert "| Song/B |" in md
    for png in ("sdr_boxplot.png", "waveform_Song A.png", "spectrogram_Song A.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert set(doc["files"].values()) == {
        "summary.json",
        "report.md",
        "sdr_boxplot.png",
        "waveform_Song A.png",
        "spectrogram_Song A.png",
    }
    # the waveform and spectrogram panels of one passage side by side, the passage named
    assert "![waveform](<waveform_Song A.png>) ![spectrogram](<spectrogram_Song A.png>)" in md
    start = loudest_passage(ref, 2 * RATE) / RATE
    assert doc["passage"] == {"track": "Song A", "channel": 0, "start_seconds": start,
                              "seconds": 2.0}
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not list(tmp_path.glob(".tmp-*"))
    # rerun into the same directory: refused before writing, unless overwrite (stale figures go)
    with pytest.raises(FileExistsError, match="already holds an evaluation"):
        write_report(tmp_path, [b], meta={})
    write_report(tmp_path, [b], meta={}, overwrite=True)
    assert len(_strict_load(tmp_path / "summary.json")["tracks"]) == 1
    assert not (tmp_path / "waveform_Song A.png").exists() and (tmp_path / "notes.txt").exists()


def test_clipping_aggregation_weights_overshoot_and_takes_db_of_the_ratio() -> None:
    def clip(n: int, count: int, mean: float | None, peak: float) -> dict:
        return {"n_samples": n, "overshoot_count": count, "fraction_overshoot": count / n,
                "overshoot_mean": mean, "overshoot_max": mean, "peak_ratio": peak,
                "peak_ratio_db": 20 * np.log10(peak)}

    a, *_ = _track("a", 1)
    per = [clip(100, 1, 0.5, 0.5), clip(100, 9, 0.1, 2.0), clip(100, 0, None, 1.0)]
    results = [TrackResult(f"t{i}", ["vocals"], a.sdr_frames[:1], clipping={"vocals": c})
               for i, c in enumerate(per)]
    agg = build_summary(results, {})["clipping"]["vocals"]
    assert agg["overshoot_mean"] == pytest.approx((1 * 0.5 + 9 * 0.1) / 10)
    assert agg["overshoot_count"] == 10 and agg["fraction_overshoot"] == pytest.approx(10 / 300)
    assert agg["peak_ratio"] == pytest.approx(1.0) and agg["peak_ratio_db"] == pytest.approx(0.0)
    # per-track medians in the summary are aggregate_tracks' own
    summary = build_summary(results, {})
    meds = summary["aggregates"]["SDR"]["vocals"]["median_of_track_medians"]["track_medians"]
    assert [t["metrics"]["SDR"]["vocals"]["median"] for t in summary["tracks"]] == meds


def test_bss_metrics_are_aggregated_when_present(tmp_path) -> None:
    a, *_ = _track("x", 3)
    f = a.frames()
    a.bss = {"SDR": f, "ISR": f + 1, "SIR": f + 2, "SAR": f + 3}
    doc = write_report(tmp_path, [a])
    assert doc["metrics"] == ["SDR", "ISR", "SIR", "SAR"]
    assert doc["aggregates"]["SIR"]["vocals"]["pooled_frames"]["median"] == pytest.approx(
        doc["aggregates"]["SDR"]["vocals"]["pooled_frames"]["median"] + 2
    )
    assert "## SIR (dB)" in (tmp_path / "report.md").read_text()


def test_refuses_to_overwrite_foreign_files(tmp_path) -> None:
    a, *_ = _track("x", 4)
    (tmp_path / "report.md").write_text("user's own report")
    with pytest.raises(FileExistsError, match="report.md"):
        write_report(tmp_path, [a])
    assert (tmp_path / "report.md").read_text() == "user's own report"
    assert not (tmp_path / "summary.json").exists()
    write_report(tmp_path, [a], overwrite=True)
    assert (tmp_path / "report.md").read_text().startswith("<!-- generated by waveunet.report")


def test_loudest_passage_finds_the_burst() -> None:
    ref = np.full((2, 2, 10_000), 0.01)
    ref[0, :, 6000:6500] = 0.9
    start = loudest_passage(ref, 500)
    assert start == 6000


def test_bad_frames_shape_is_reported(tmp_path) -> None:
    a, *_ = _track("x", 5)
    a.sdr_frames = a.frames()[:1]
    with pytest.raises(ValueError, match="frames have shape"):
        write_report(tmp_path, [a])


@pytest.mark.parametrize("policy,allowed,refused", [
    (ONLY_OURS, False, "holds a.txt not written by `waveunet x`; choose another x.out_dir"),
    (ONLY_OURS, True, None),                 # an earlier call of the same command wrote it
    (OVERWRITE_CLEARS, False, "already holds a report (a.txt); choose another x.out_dir or "
                              "set overwrite=true"),
    (OVERWRITE_CLEARS, True, None),          # overwrite=true
])
def test_the_one_out_dir_guard_and_its_two_policies(tmp_path, policy, allowed, refused) -> None:
    def ours(folder: Path) -> list[str]:
        return [n for n in ("a.txt", "b.txt") if (folder / n).exists()]

    what = "`waveunet x`" if policy == ONLY_OURS else "a report"
    guard = partial(guard_out_dir, ours=ours, policy=policy, allowed=allowed, what=what,
                    setting="x.out_dir")
    assert guard(tmp_path / "none") == []  # not there yet: nothing to refuse, nothing made
    assert not (tmp_path / "none").exists()
    (tmp_path / "a.txt").write_text("")
    with pytest.raises(FileExistsError, match=f"^{tmp_path / 'a.txt'} exists and is not a dir"):
        guard(tmp_path / "a.txt")
    if refused is None:
        assert guard(tmp_path) == ["a.txt"]
    else:
        with pytest.raises(FileExistsError) as caught:
            guard(tmp_path)
        assert str(caught.value) == f"{tmp_path} {refused}"
