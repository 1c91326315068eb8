"""Generated MUSDB18-HQ-layout datasets: musical-sounding stems for demos and tests.

``waveunet synth --out DIR --tracks N --seconds S --seed K`` writes
``DIR/{train,test}/<track>/{mixture,vocals,drums,bass,other}.wav`` at 44.1 kHz
stereo as 32-bit float WAV (subtype FLOAT), so ``mixture`` equals the sum of
the four stems to float32 rounding and can be pushed to near full scale
without clipping. Every track has:

- bass: plucked, harmonic-rich notes following the chord roots;
- other: chord stabs (three detuned harmonic voices, panned);
- drums: kick, snare and hi-hat one-shots on a beat grid;
- vocals: a voiced melody (harmonics shaped by vowel formants) with vibrato,
  note gaps, rests, and a silent intro, i.e. passages with accompaniment only,
  where the ideal accompaniment estimate equals the mixture.

Some tracks (always the first of each subset) are mastered to a 0.99 peak: the
loud, near-full-scale case where a tanh output's attenuation shows.
Generation is vectorised numpy and deterministic for a seed (to the last bit of
float32, which numpy's alignment-dependent SIMD maths can rarely flip).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve

from ..audio import write_audio
from ..commands import ExamplesHelpFormatter
from ..errors import ConfigError, DataError
from ..files import DIR_MODE

STEMS = ("vocals", "drums", "bass", "other")
SUBTYPE = "FLOAT"
LOUD_PEAK = 0.99
MARKER = "synth.json"

_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
_MINOR = np.array([0, 2, 3, 5, 7, 8, 10])
# (F1, F2, F3) in Hz for a few vowels: gives the vocal line a voice-like spectrum.
_VOWELS = np.array([[730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010],
                    [570, 840, 2410], [300, 870, 2240]], dtype=np.float64)


def _hz(midi: np.ndarray) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def _phase(freq_hz: np.ndarray, sr: int) -> np.ndarray:
    return 2 * np.pi * np.cumsum(freq_hz) / sr


def _normalise(x: np.ndarray) -> np.ndarray:
    peak = np.max(np.abs(x))
    return x / peak if peak > 0 else x


def _bass(rng, t_beats, roots, beat_s, sr) -> np.ndarray:
    n_beats = int(np.ceil(t_beats[-1])) + 1
    beat = np.floor(t_beats).astype(int)
    # Root on most beats, sometimes the fifth or the octave, one octave below the chords.
    offsets = rng.choice([0, 0, 0, 7, 12], size=n_beats)
    pitch = roots[beat // 4] - 12 + offsets[beat]
    phase = _phase(_hz(pitch), sr)
    wave = sum(np.sin(k * phase) / k**1.3 for k in range(1, 7))
    tau = (t_beats - beat) * beat_s
    env = (1 - np.exp(-tau / 0.004)) * np.exp(-tau / 0.35)
    mono = _normalise(wave * env)
    return np.stack([mono, mono])


def _chords(rng, t_beats, chord_tones, beat_s, sr) -> np.ndarray:
    bar = np.floor(t_beats / 4).astype(int)
    half = np.floor(t_beats / 2)  # a stab every half bar
    tau = (t_beats / 2 - half) * 2 * beat_s
    env = (1 - np.exp(-tau / 0.01)) * (0.3 + 0.7 * np.exp(-tau / 0.5))
    out = np.zeros((2, t_beats.size))
    for voice in range(3):
        freq = _hz(chord_tones[bar, voice]) * (1 + 0.002 * (voice - 1))
        phase = _phase(freq, sr) + rng.uniform(0, 2 * np.pi)
        wave = sum(np.sin(k * phase) * 0.6 ** (k - 1) for k in range(1, 5))
        pan = 0.2 + 0.3 * voice  # left .. right
        out[0] += (1 - pan) * wave * env
        out[1] += pan * wave * env
    return _normalise(out)


def _drums(rng, n_samples, beat_s, sr) -> np.ndarray:
    n_eighths = int(n_samples / sr / (beat_s / 2)) + 1
    eighth = np.arange(n_eighths)
    hit_at = (eighth * beat_s / 2 * sr).astype(int)
    hit_at = hit_at[hit_at < n_samples]
    eighth = eighth[: hit_at.size]

    def hits(mask: np.ndarray, velocity: tuple[float, float]) -> np.ndarray:
        impulses = np.zeros(n_samples)
        impulses[hit_at[mask]] = rng.uniform(*velocity, size=int(mask.sum()))
        return impulses

    pos = eighth % 8
    kick_mask = (pos == 0) | (pos == 4) | ((pos == 5) & (rng.random(eighth.size) < 0.3))
    snare_mask = (pos == 2) | (pos == 6)
    t = np.arange(int(0.4 * sr)) / sr
    kick = np.sin(2 * np.pi * np.cumsum(45 + 110 * np.exp(-t / 0.03)) / sr) * np.exp(-t / 0.12)
    snare_noise = rng.standard_normal((2, t.size)) * np.exp(-t / 0.07)
    snare = 0.6 * snare_noise + np.sin(2 * np.pi * 190 * t) * np.exp(-t / 0.05)
    hat = np.diff(rng.standard_normal((2, t.size + 1)), axis=1) * np.exp(-t / 0.015)

    out = np.zeros((2, n_samples))
    kick_track = fftconvolve(hits(kick_mask, (0.8, 1.0)), kick)[:n_samples]
    out += kick_track
    snare_hits = hits(snare_mask, (0.7, 1.0))
    hat_hits = hits(np.ones_like(snare_mask), (0.2, 0.5))
    for ch in range(2):
        out[ch] += fftconvolve(snare_hits, snare[ch])[:n_samples]
        out[ch] += (0.6 + 0.4 * ch) * fftconvolve(hat_hits, hat[ch])[:n_samples]
    return _normalise(out)


def _vocals(rng, n_samples, beat_s, key_root, scale, sr) -> np.ndarray:
    # Note list: (start_beat, length_beats, midi or None for a rest). Loop over notes
    # (a few dozen per track); everything per sample is vectorised.
    total_beats = n_samples / sr / beat_s
    intro = rng.uniform(0.2, 0.35) * total_beats  # accompaniment-only intro
    starts, lengths, pitches, vowels = [], [], [], []
    beat = intro
    degree = 7
    while beat < total_beats:
        length = float(rng.choice([0.5, 1.0, 1.0, 1.5, 2.0]))
        if rng.random() < 0.12:  # rest between phrases
            beat += float(rng.choice([1.0, 2.0]))
            continue
        degree = int(np.clip(degree + rng.integers(-2, 3), 0, 13))
        starts.append(beat)
        lengths.append(length)
        pitches.append(key_root + 12 + 12 * (degree // 7) + scale[degree % 7])
        vowels.append(rng.integers(len(_VOWELS)))
        beat += length
    if not starts:
        return np.zeros((2, n_samples))
    out = np.zeros(n_samples)
    start_s = (np.array(starts) * beat_s * sr).astype(int)
    ends = (np.array(starts) + np.array(lengths)) * beat_s * sr
    end_s = np.minimum(ends.astype(int), n_samples)
    note = np.full(n_samples, -1)
    for i, (a, b) in enumerate(zip(start_s, end_s, strict=True)):
        note[a:b] = i
    voiced = note >= 0
    idx = np.where(voiced, note, 0)
    t = np.arange(n_samples) / sr
    tau = t - start_s[idx] / sr
    dur = (end_s[idx] - start_s[idx]) / sr
    # Vibrato grows in after the attack, like a singer's.
    vibrato = 0.35 * np.minimum(tau / 0.3, 1.0) * np.sin(2 * np.pi * 5.5 * t)
    f0 = _hz(np.array(pitches)[idx] + vibrato)
    phase = _phase(f0, sr)
    formants = _VOWELS[np.array(vowels)[idx]]  # (T, 3)
    for k in range(1, 17):
        fk = k * f0
        # Spectral envelope: three formant peaks over a falling slope.
        gain = sum(np.exp(-0.5 * ((fk - formants[:, j]) / 120.0) ** 2) / (j + 1) for j in range(3))
        gain = (0.15 / k + gain) * (fk < sr / 2.5)
        out += gain * np.sin(k * phase)
    env = np.clip(tau / 0.03, 0, 1) * np.clip((dur - tau) / 0.06, 0, 1) * voiced
    out = out * env + 0.01 * rng.standard_normal(n_samples) * env  # a little breath
    mono = _normalise(out)
    return np.stack([mono, 0.97 * mono])


def generate_track(
    seed_seq: list[int], seconds: float, sample_rate_hz: int, loud: bool
) -> dict[str, np.ndarray]:
    """One track's stems (float32, (2, samples)) and their sum ``mixture``."""
    rng = np.random.default_rng(seed_seq)
    sr = sample_rate_hz
    n = int(round(seconds * sr))
    beat_s = 60.0 / rng.uniform(90, 130)
    scale = _MAJOR if rng.random() < 0.5 else _MINOR
    key_root = int(rng.integers(52, 60))  # chords around middle C, bass an octave below
    n_bars = int(np.ceil(n / sr / beat_s / 4)) + 1
    degrees = rng.choice([[0, 5, 3, 4], [0, 3, 4, 4], [5, 3, 0, 4], [0, 4, 5, 3]])
    bar_degree = np.resize(degrees, n_bars)
    chord_tones = np.stack(
        [key_root + 12 * ((bar_degree + d) // 7) + scale[(bar_degree + d) % 7]
         for d in (0, 2, 4)],
        axis=1
    )
    t_beats = np.arange(n) / sr / beat_s
    stems = {
        "bass": 0.55 * _bass(rng, t_beats, chord_tones[:, 0], beat_s, sr),
        "other": 0.35 * _chords(rng, t_beats, chord_tones, beat_s, sr),
        "drums": 0.6 * _drums(rng, n, beat_s, sr),
        "vocals": 0.5 * _vocals(rng, n, beat_s, key_root, scale, sr),
    }
    # numpy's SIMD sin/exp can differ in the last bit with memory alignment, i.e. between
    # processes; rounding the gain to float32 keeps one such bit from rescaling every sample.
    peak = np.max(np.abs(sum(stems.values())))
    target = LOUD_PEAK if loud else rng.uniform(0.3, 0.8)
    gain = float(np.float32(target / peak))
    out = {name: (stems[name] * gain).astype(np.float32) for name in STEMS}
    # Sum the float32 stems as written, so mixture == sum(stems) up to float32 rounding.
    mixture = np.sum([out[name].astype(np.float64) for name in STEMS], axis=0)
    out["mixture"] = mixture.astype(np.float32)
    return out


def default_test_tracks(tracks: int) -> int:
    """Test tracks when not given: a quarter of ``tracks``, at least one."""
    return max(1, round(tracks / 4))


def check_settings(*, tracks: int, seconds: float, test_tracks: int | None,
                   sample_rate_hz: int, names: dict[str, str] | None = None) -> None:
    """ConfigError naming the first bad setting (``names``: how each is spelled where it was
    given, e.g. ``--seconds``); NaN and infinities are refused (every comparison with NaN is
    false, so ``seconds <= 0`` alone lets it through)."""
    names = names or {}
    rules = (("tracks", tracks, 1, "an integer >= 1"), ("test_tracks", test_tracks, 0,
             "null or an integer >= 0"), ("seconds", seconds, 0, "a finite number > 0"),
             ("sample_rate_hz", sample_rate_hz, 1, "an integer >= 1"))
    for key, value, low, what in rules:
        if value is None and key == "test_tracks":
            continue
        ok = math.isfinite(value) and (value > low if key == "seconds" else value >= low)
        if not ok or (key != "seconds" and value != int(value)):
            where = "" if names else "synth: "  # the command line's names need no prefix
            raise ConfigError(f"{where}{names.get(key, key)} must be {what}, got {value!r}")


def generate_dataset(
    out_dir: str | os.PathLike,
    *,
    tracks: int,
    seconds: float,
    seed: int,
    sample_rate_hz: int = 44100,
    test_tracks: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a MUSDB18-HQ-layout dataset; returns ``out_dir``.

    A new directory is built under a temporary name and renamed into place, so an
    interrupted run never leaves something that looks like a complete dataset.
    ``test_tracks`` defaults to a quarter of ``tracks`` (at least one). ``progress``: a tqdm
    bar over the tracks (``waveunet synth`` shows it).
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    check_settings(tracks=tracks, seconds=seconds, test_tracks=test_tracks,
                   sample_rate_hz=sample_rate_hz)
    n_test = default_test_tracks(tracks) if test_tracks is None else int(test_tracks)
    non_empty = out_dir.is_dir() and any(out_dir.iterdir())
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"synth: {out_dir} exists and is not a directory")
    if non_empty and not overwrite:
        raise DataError(
            f"synth: refusing to write into non-empty directory {out_dir} (use --force)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    target = out_dir if non_empty else Path(
        tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    if target != out_dir:
        target.chmod(DIR_MODE)  # mkdtemp makes 0700; the dataset should look like any other folder
    plan = [(subset, i, subset_id)
            for subset, count, subset_id in (("train", tracks, 0), ("test", n_test, 1))
            for i in range(count)]
    try:
        for subset, i, subset_id in tqdm(plan, desc="synth", unit="track", disable=not progress,
                                         dynamic_ncols=True):
            audio = generate_track([seed, subset_id, i], seconds, sample_rate_hz,
                                   loud=(i % 2 == 0))
            folder = target / subset / f"track_{i:03d}"
            for name, data in audio.items():
                write_audio(folder / f"{name}.wav", data, sample_rate_hz, subtype=SUBTYPE,
                            overwrite=overwrite)
        info = {"tracks": tracks, "test_tracks": n_test, "seconds": seconds, "seed": seed,
                "sample_rate_hz": sample_rate_hz, "subtype": SUBTYPE}
        (target / MARKER).write_text(json.dumps(info, indent=2) + "\n")
        if target != out_dir:
            if out_dir.is_dir():
                out_dir.rmdir()  # empty: checked above
            os.replace(target, out_dir)
    except BaseException:
        if target != out_dir:
            shutil.rmtree(target, ignore_errors=True)
        raise
    return out_dir


EXAMPLES = """examples:
  waveunet synth --out data/synth --tracks 8 --seconds 12 --seed 0
  waveunet synth --out data/synth-long --tracks 40 --test-tracks 10 --seconds 60 -q
  waveunet synth --out data/synth-22k --tracks 4 --seconds 30 --sample-rate 22050"""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="waveunet synth", description=__doc__.split("\n\n")[0],
                                     epilog=EXAMPLES,
                                     formatter_class=ExamplesHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="output directory (created)")
    parser.add_argument("--tracks", type=int, default=8, help="training tracks (default 8)")
    parser.add_argument("--test-tracks", type=int, default=None,
                        help="test tracks (default tracks/4, at least 1)")
    parser.add_argument("--seconds", type=float, default=12.0,
                        help="length of each track in seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-rate", type=int, default=44100, help="Hz (default 44100)")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty directory, replacing files")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    check_settings(tracks=args.tracks, seconds=args.seconds, test_tracks=args.test_tracks,
                   sample_rate_hz=args.sample_rate,
                   names={"tracks": "--tracks", "test_tracks": "--test-tracks",
                          "seconds": "--seconds", "sample_rate_hz": "--sample-rate"})
    out = generate_dataset(args.out, tracks=args.tracks, seconds=args.seconds, seed=args.seed,
                           sample_rate_hz=args.sample_rate, test_tracks=args.test_tracks,
                           overwrite=args.force, progress=not args.quiet)
    print(f"wrote {out} (MUSDB18-HQ layout, {SUBTYPE} WAV at {args.sample_rate} Hz)")
    return 0
