"""The tiling engine: exact chunked inference, resampling/channel round trips, chunk sizing."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_model

from waveunet.audio import resample
from waveunet.devices import resolve_device
from waveunet.errors import ConfigError, DataError
from waveunet.model.checkpoint import save_checkpoint
from waveunet.separation.inference import (
    SeparationResult,
    Separator,
    _TensorWindow,
    estimate_activation_bytes,
)


def overshooting_model():
    """A linear direct head whose outputs are 3x the input: many clipped samples, real overshoot."""
    model = tiny_model(output="direct", activation="linear")
    with torch.no_grad():
        for conv in model.head.convs:
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[:, :2, 0] = 3 * torch.eye(2)
    return model


def noise(channels, samples, seed=1, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(channels, samples, generator=g) * 2 - 1) * scale


def whole_padded_forward(model, mixture):
    """One forward pass over the whole song, zero-padded to a valid input: the reference."""
    total = mixture.shape[-1]
    n_out = model.output_samples_for(total)
    n_in = model.input_samples_for(n_out)
    ctx = model.context_samples
    padded = torch.zeros(1, mixture.shape[0], n_in)
    padded[0, :, ctx:ctx + total] = mixture
    with torch.inference_mode():
        out = model(padded)
    return out.estimates[0, ..., :total], out.unclipped[0, ..., :total]


@pytest.mark.parametrize("channels,upsampling,output", [
    (2, "linear", "difference"), (1, "learned", "direct"),
])
def test_tiling_equals_one_forward_for_any_chunk_size(channels, upsampling, output):
    model = tiny_model(channels=channels, upsampling=upsampling, output=output, activation="linear")
    if upsampling == "learned":  # make the learned weights differ from 0.5
        with torch.no_grad():
            for p in model.upsample_logits:
                p.normal_()
    mixture = noise(channels, 5000)
    ref_est, ref_raw = whole_padded_forward(model, mixture)
    steps = set()
    for chunk, batch in [(1, 64), (40, 8), (256, 2), (1000, 4), (10**6, 1)]:
        sep = Separator(model, device="cpu", chunk_output_samples=chunk, batch_size=batch,
                        precision="fp32")
        plan = sep.plan(mixture.shape[-1])
        assert plan.step_samples % 2**3 == 0
        assert plan.num_chunks * plan.step_samples >= 5000
        steps.add(plan.step_samples)
        result = sep.separate_tensor(mixture)
        assert result.stems.shape == (2, channels, 5000)
        torch.testing.assert_close(result.unclipped, ref_raw, atol=1e-5, rtol=0)
        torch.testing.assert_close(result.stems, ref_est, atol=1e-5, rtol=0)
    assert len(steps) == 5  # really different tilings


def test_unaligned_step_would_not_be_exact():
    """Why steps are aligned: shifting the input by a non-multiple of 2**L changes outputs."""
    model = tiny_model(activation="linear")
    x = noise(2, 4000)
    ctx = model.context_samples
    n_in = model.input_samples_for(1005)
    with torch.inference_mode():
        a = model(x[None, :, 0:n_in]).unclipped[0, ..., 3:503]
        b = model(x[None, :, 3:3 + n_in]).unclipped[0, ..., 0:500]
        c = model(x[None, :, 8:8 + n_in]).unclipped[0, ..., 0:500]
        d = model(x[None, :, 0:n_in]).unclipped[0, ..., 8:508]
    assert ctx > 0
    assert (a - b).abs().max() > 1e-3
    torch.testing.assert_close(c, d, atol=1e-5, rtol=0)


@pytest.mark.parametrize("samples", [1, 7, 300, 20_000])
def test_lengths_short_and_long(samples):
    model = tiny_model()
    sep = Separator(model, device="cpu", chunk_output_samples=500, batch_size=3)
    result = sep.separate_tensor(noise(2, samples))
    assert result.stems.shape == result.unclipped.shape == (2, 2, samples)
    plan = sep.plan(samples)
    assert plan.num_chunks == math.ceil(samples / plan.step_samples)
    if samples < model.input_samples:
        assert plan.num_chunks == 1 and plan.step_samples < 512 + 8


def test_difference_stems_sum_to_the_mixture():
    model = tiny_model(output="difference", activation="tanh")
    mixture = noise(2, 3000, scale=0.9)
    result = Separator(model, device="cpu", chunk_output_samples=200).separate_tensor(mixture)
    torch.testing.assert_close(result.unclipped.sum(0), mixture, atol=1e-5, rtol=0)
    assert result.stems.abs().max() <= 1.0


@pytest.mark.parametrize("rate", [22050, 44100, 48000])
@pytest.mark.parametrize("in_channels", [1, 2])
@pytest.mark.parametrize("model_channels", [1, 2])
def test_separate_any_rate_and_channels(rate, in_channels, model_channels):
    model = tiny_model(channels=model_channels)
    sep = Separator(model, device="cpu", chunk_output_samples=300)
    length = int(0.3 * rate) + 17
    audio = noise(in_channels, length).numpy()
    result = sep.separate(audio, rate)
    assert result.sample_rate_hz == rate
    assert result.stems.shape == result.unclipped.shape == (2, in_channels, length)
    assert result.stems.dtype == torch.float32
    assert result.stems.abs().max() <= 1.0
    # difference model: stems sum to the mixture as the model saw it, band-limited to its rate
    model_mix = audio if model_channels == in_channels else (
        audio.mean(0, keepdims=True) if model_channels == 1 else np.tile(audio, (2, 1)))
    seen = resample(resample(model_mix, rate, 22050), 22050, rate)[..., :length]
    if in_channels != model_channels:
        seen = seen.mean(0, keepdims=True) if in_channels == 1 else np.tile(seen, (2, 1))
    np.testing.assert_allclose(result.unclipped.sum(0).numpy(), seen, atol=1e-4)


def test_separate_at_model_rate_is_separate_tensor():
    model = tiny_model()
    sep = Separator(model, device="cpu", chunk_output_samples=300)
    audio = noise(2, 4000)
    a = sep.separate(audio.numpy(), 22050)
    b = sep.separate_tensor(audio)
    torch.testing.assert_close(a.stems, b.stems)
    torch.testing.assert_close(a.unclipped, b.unclipped)


def test_more_channels_than_the_model_are_mixed_down():
    sep = Separator(tiny_model(channels=2), device="cpu")
    result = sep.separate(noise(6, 1000).numpy(), 22050)
    assert result.stems.shape == (2, 6, 1000)


def test_context_free_model_tiles_non_overlapping_chunks():
    model = tiny_model(context=False, output="direct")
    sep = Separator(model, device="cpu", chunk_output_samples=100, batch_size=2,
                    precision="fp32")
    assert sep.step_samples == sep.chunk_output_samples == 104  # a multiple of 2**3
    mixture = noise(2, 1000)
    result = sep.separate_tensor(mixture)
    assert result.stems.shape == (2, 2, 1000)
    padded = torch.zeros(1, 2, 10 * 104)
    padded[0, :, :1000] = mixture
    with torch.inference_mode():
        second = model(padded[..., 104:208]).estimates[0]
    torch.testing.assert_close(result.stems[..., 104:208], second, atol=1e-6, rtol=0)


@pytest.mark.parametrize("context", (True, False))
@pytest.mark.parametrize("passage", ((0, 300), (700, 1000), (333, 777), (500, 501)))
def test_a_passage_separates_as_the_whole_song_cropped(context, passage):
    model = tiny_model(context=context, output="direct", activation="linear")
    sep = Separator(model, device="cpu", chunk_output_samples=100, precision="fp32")
    mixture = noise(2, 1000, scale=0.9)
    whole = sep.separate_tensor(mixture)
    part = sep.separate_passage(mixture, *passage)
    crop = slice(*passage)
    assert part.stems.shape == (2, 2, passage[1] - passage[0])
    torch.testing.assert_close(part.stems, whole.stems[..., crop], atol=1e-6, rtol=0)
    torch.testing.assert_close(part.unclipped, whole.unclipped[..., crop], atol=1e-6, rtol=0)
    with pytest.raises(DataError, match="passage 900:1100"):
        sep.separate_passage(mixture, 900, 1100)


def test_a_training_model_is_used_in_eval_mode_and_left_training():
    model = tiny_model(activation="linear").train()
    mixture = noise(2, 1000, scale=0.99)
    with torch.no_grad():  # the difference source exceeds the bounds: clipped only in eval
        model.head.convs[0].bias.fill_(-0.5)
    result = Separator(model, device="cpu").separate_tensor(mixture)
    assert model.training
    assert result.stems.abs().max() <= 1.0 < result.unclipped.abs().max()


def test_chunk_size_from_memory_budget():
    model = tiny_model(levels=4)
    budget = 4 * 2**20
    sep = Separator(model, device="cpu", batch_size=2, memory_budget_bytes=budget)
    n = sep.chunk_output_samples
    assert sep.step_samples % 16 == 0 and sep.step_samples == n - 5
    assert estimate_activation_bytes(model, n, 2) <= budget
    assert estimate_activation_bytes(model, n + 16, 2) > budget
    smaller = Separator(model, device="cpu", batch_size=2, memory_budget_bytes=budget // 4)
    assert smaller.step_samples < sep.step_samples
    tiny_budget = Separator(model, device="cpu", memory_budget_bytes=1)
    assert tiny_budget.step_samples == 16  # the smallest aligned chunk, not an error


def test_estimate_grows_with_batch_and_chunk():
    model = tiny_model(levels=4)
    one = estimate_activation_bytes(model, 10_000, 1)
    assert estimate_activation_bytes(model, 10_000, 3) == pytest.approx(3 * one, rel=1e-6)
    # the skips alone: sum over levels of F(i+1) x (length at level i), float32
    n_in = model.input_samples_for(10_000)
    skips = sum(4 * (i + 1) * n_in / 2**i for i in range(4)) * 4
    assert skips < one < 10 * skips
    assert estimate_activation_bytes(model, 20_000, 1) > 1.5 * one


def test_from_checkpoint_round_trip(tmp_path):
    model = tiny_model(activation="linear")
    path = save_checkpoint(tmp_path / "m.pt", model)
    sep = Separator.from_checkpoint(path, device="cpu", chunk_output_samples=300)
    assert (sep.sample_rate_hz, sep.channels, sep.sources) == (
        22050,
        2,
        ("accompaniment", "vocals"),
    )
    mixture = noise(2, 2000)
    expected = Separator(model, device="cpu").separate_tensor(mixture)
    torch.testing.assert_close(
        sep.separate_tensor(mixture).stems, expected.stems, atol=1e-5, rtol=0
    )


def test_clip_report_counts_and_overshoot():
    model = overshooting_model()
    mixture = noise(2, 2000, scale=0.9)
    result = Separator(model, device="cpu", precision="fp32").separate_tensor(mixture)
    raw = 3 * mixture
    torch.testing.assert_close(result.unclipped[0], raw, atol=1e-5, rtol=0)
    torch.testing.assert_close(result.stems[0], raw.clamp(-1, 1), atol=1e-5, rtol=0)
    report = result.clip_report(-1.0, 1.0)
    beyond = raw.abs() > 1
    r = report["vocals"]
    assert r["clipped_count"] == int(beyond.sum()) and r["overshoot_count"] == int(beyond.sum())
    assert r["fraction_clipped"] == pytest.approx(beyond.float().mean().item())
    assert r["overshoot_max"] == pytest.approx((raw.abs() - 1).max().item(), abs=1e-5)
    assert r["overshoot_mean"] == pytest.approx((raw.abs() - 1)[beyond].mean().item(), abs=1e-5)


def test_clip_report_on_known_values():
    stems = torch.tensor([[[0.5, 1.0, -1.0, 0.2]], [[0.0, 0.0, 0.0, 0.0]]])
    raw = torch.tensor([[[0.5, 1.5, -1.25, 0.2]], [[0.0, 0.0, 0.0, 0.0]]])
    result = SeparationResult(stems, raw, ("a", "b"), 8000)
    report = result.clip_report()
    assert report["a"]["clipped_count"] == 2 and report["a"]["overshoot_count"] == 2
    assert report["a"]["overshoot_max"] == pytest.approx(0.5)
    assert report["a"]["overshoot_mean"] == pytest.approx(0.375)
    assert report["b"] == {"n_samples": 4, "clipped_count": 0, "fraction_clipped": 0.0,
                           "overshoot_count": 0, "fraction_overshoot": 0.0,
                           "overshoot_max": None, "overshoot_mean": None}
    shifted = result.clip_report(0.0, 2.0)["a"]  # only -1.0 (raw -1.25) is out of [0, 2]
    assert shifted["clipped_count"] == 1 and shifted["overshoot_max"] == pytest.approx(1.25)
    assert result["b"].shape == (1, 4)


def test_bad_inputs_are_clear_errors():
    sep = Separator(tiny_model(), device="cpu")
    with pytest.raises(DataError, match="zero-length"):
        sep.separate(np.zeros((2, 0), np.float32), 44100)
    with pytest.raises(DataError, match=r"channels, samples\), got \(100,\): for mono "
                       r"audio pass audio\[None\]"):
        sep.separate(np.zeros(100, np.float32), 44100)  # soundfile's mono array
    with pytest.raises(DataError, match=r"channels, samples\), got \(1, 2, 100\)$"):
        sep.separate(np.zeros((1, 2, 100), np.float32), 44100)
    with pytest.raises(DataError, match="NaN"):
        sep.separate(np.full((2, 100), np.nan, np.float32), 22050)
    with pytest.raises(DataError, match="shape"):
        sep.separate_tensor(torch.zeros(1, 100))  # the model is stereo
    with pytest.raises(ConfigError):
        Separator(tiny_model(), device="cpu", batch_size=0)


def test_non_finite_output_is_an_error_wherever_it_appears():
    """Checked after the first batch and at the song's end: here only a later batch is NaN."""
    sep = Separator(tiny_model(), device="cpu", chunk_output_samples=256, precision="fp32")
    song = noise(2, 4000)
    forward, calls = sep.model.forward, []

    def nan_in_the_third_batch(batch):
        out = forward(batch)
        calls.append(1)
        if len(calls) == 3:
            out.unclipped[0, 0, 0, 5] = float("nan")
        return out

    sep.model.forward = nan_in_the_third_batch
    chunks = sep.iter_chunks(song.shape[-1], _TensorWindow(song), check_finite=True)
    assert torch.isfinite(next(chunks)[1]).all()  # the first batch is yielded
    with pytest.raises(DataError, match=r"^the model produced non-finite output \(NaN or "
                       r"infinity\) in fp32"):
        list(chunks)
    assert len(calls) == sep.plan(song.shape[-1]).num_chunks > 3  # found at the song's end
    sep.origin, calls[:] = "broken.pt", []
    with pytest.raises(DataError, match="^the model of broken.pt produced non-finite"):
        list(sep.iter_chunks(song.shape[-1], _TensorWindow(song), check_finite=True))
    calls[:] = []  # the array API returns it as it is: evaluate's nonfinite rule applies
    assert torch.isnan(sep.separate_tensor(song).unclipped).sum() == 1


def test_device_choice():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="^-d: 'meta' holds no data"):
        resolve_device("meta", setting="-d")
    if not torch.backends.mps.is_available():
        with pytest.raises(ConfigError, match="^device: 'mps' is not available"):
            resolve_device("mps")


# -- streaming, file to file (waveunet.separation.streaming) ----------------------------
from waveunet.separation import streaming  # noqa: E402
from waveunet.separation.streaming import BlockResampler  # noqa: E402


@pytest.mark.parametrize("orig,new", [(44100, 22050), (22050, 44100), (48000, 22050),
                                      (22050, 48000), (44100, 48000), (16000, 44100)])
def test_block_resampling_equals_whole_signal_resampling(orig, new):
    for length in (1, 5, 160, 3001):
        x = noise(2, length, seed=length)
        whole = resample(x, orig, new)
        for block in (1, 13, 147, 4096):
            if length > 1000 and block < 100:
                continue
            r = BlockResampler(orig, new, 2)
            pieces = [r.push(x[:, i:i + block]) for i in range(0, length, block)] + [r.finish()]
            streamed = torch.cat(pieces, -1)
            assert streamed.shape == whole.shape
            torch.testing.assert_close(streamed, whole, atol=1e-5, rtol=0)
    same = BlockResampler(22050, 22050, 1)
    assert torch.equal(torch.cat([same.push(noise(1, 10)), same.finish()], -1), noise(1, 10))


def _song(tmp_path, audio, rate, name="song.wav"):
    import soundfile as sf

    path = tmp_path / name
    sf.write(str(path), audio.T, rate, subtype="FLOAT")
    return path


def _read(path):
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return data.T, rate


def _assert_reports_equal(streamed, whole):
    assert streamed.keys() == whole.keys()
    for name in whole:
        s, w = streamed[name], whole[name]
        assert s["n_samples"] == w["n_samples"]
        assert abs(s["clipped_count"] - w["clipped_count"]) <= 1  # float rounding at a bound
        assert abs(s["overshoot_count"] - w["overshoot_count"]) <= 1
        for key in ("overshoot_max", "overshoot_mean"):
            assert (s[key] is None) == (w[key] is None)
            if w[key] is not None:
                assert s[key] == pytest.approx(w[key], abs=1e-4)


@pytest.mark.parametrize("rate", [22050, 44100, 48000])
@pytest.mark.parametrize("in_channels", [1, 2])
@pytest.mark.parametrize("seconds,chunk", [(0.05, 300), (0.6, 200)])
def test_streamed_file_equals_the_array_api(tmp_path, rate, in_channels, seconds, chunk):
    sep = Separator(tiny_model(), device="cpu", chunk_output_samples=chunk, batch_size=2)
    audio = noise(in_channels, int(seconds * rate) + 3, seed=rate, scale=0.99).numpy()
    song = _song(tmp_path, audio, rate)
    targets = [tmp_path / "out" / f"{s}.wav" for s in sep.sources]
    done = sep.separate_file(song, targets, subtype="FLOAT", block_frames=1000)
    expected = sep.separate(audio, rate)
    assert done.paths == targets and (done.channels, done.sample_rate_hz) == (in_channels, rate)
    for i, target in enumerate(targets):
        stem, stem_rate = _read(target)
        assert stem_rate == rate and stem.shape == audio.shape
        np.testing.assert_allclose(stem, expected.stems[i].numpy(), atol=1e-5, rtol=0)
    _assert_reports_equal(done.clip_report, expected.clip_report())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "accompaniment.wav",
        "vocals.wav",
    ]


def test_streamed_clip_report_equals_the_array_report(tmp_path):
    model = overshooting_model()
    sep = Separator(model, device="cpu", chunk_output_samples=256)
    audio = noise(2, 30_000, scale=0.9).numpy()
    for rate in (22050, 44100):
        song = _song(tmp_path, audio, rate, f"s{rate}.wav")
        targets = [tmp_path / f"{rate}" / f"{s}.wav" for s in sep.sources]
        done = sep.separate_file(song, targets, subtype="FLOAT", block_frames=777)
        whole = sep.separate(audio, rate).clip_report()
        assert whole["vocals"]["overshoot_count"] > 1000
        _assert_reports_equal(done.clip_report, whole)


def test_streaming_holds_a_window_not_the_song(tmp_path, monkeypatch):
    sep = Separator(tiny_model(), device="cpu", chunk_output_samples=500)
    song = _song(tmp_path, noise(2, 200_000).numpy(), 22050)
    held = []
    original = streaming.StreamWindow.window

    def window(self, start, stop):
        out = original(self, start, stop)
        held.append(self.buf.shape[-1])
        return out

    monkeypatch.setattr(streaming.StreamWindow, "window", window)
    sep.separate_file(song, [tmp_path / f"{s}.wav" for s in sep.sources], block_frames=1024)
    plan = sep.plan(200_000)
    assert plan.num_chunks > 300
    assert max(held) <= plan.input_samples + 1024


def test_a_failing_stream_leaves_nothing_behind(tmp_path):
    sep = Separator(tiny_model(), device="cpu", chunk_output_samples=300)
    audio = noise(2, 20_000).numpy()
    audio[:, 15_000] = np.nan  # found only after the first stems are written
    song = _song(tmp_path, audio, 22050)
    out = tmp_path / "out"
    out.mkdir()
    (out / "vocals.wav").write_bytes(b"precious")
    targets = [out / f"{s}.wav" for s in sep.sources]
    with pytest.raises(DataError, match="existing"):
        sep.separate_file(song, targets)
    with pytest.raises(DataError, match="NaN"):
        sep.separate_file(song, targets, overwrite=True, block_frames=1000)
    assert sorted(p.name for p in out.iterdir()) == ["vocals.wav"]
    assert (out / "vocals.wav").read_bytes() == b"precious"


def test_default_chunk_is_capped_on_the_cpu():
    from waveunet.separation.inference import MAX_CPU_CHUNK_OUTPUT_SAMPLES

    # the budget would allow far more
    sep = Separator(tiny_model(), device="cpu", memory_budget_bytes=2**40)
    assert sep.step_samples <= MAX_CPU_CHUNK_OUTPUT_SAMPLES < sep.step_samples + 2**3


def test_a_failing_stream_closes_its_writers_before_removing_them(tmp_path, monkeypatch):
    import soundfile as sf

    from waveunet.separation import streaming

    writers = []

    class Recording(sf.SoundFile):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if self.mode == "w":
                writers.append(self)

    real_unlink = Path.unlink
    open_at_unlink = []

    def unlink(self, *args, **kwargs):
        open_at_unlink.extend(
            str(w.name) for w in writers if not w.closed and str(w.name) == str(self)
        )
        return real_unlink(self, *args, **kwargs)

    sep = Separator(tiny_model(), device="cpu", chunk_output_samples=300)
    audio = noise(2, 20_000).numpy()
    audio[:, 15_000] = np.nan
    song = _song(tmp_path, audio, 22050)
    monkeypatch.setattr(streaming.sf, "SoundFile", Recording)
    monkeypatch.setattr(Path, "unlink", unlink)
    out = tmp_path / "out"
    with pytest.raises(DataError, match="NaN"):
        sep.separate_file(song, [out / f"{s}.wav" for s in sep.sources], block_frames=1000)
    assert len(writers) == len(sep.sources) and open_at_unlink == []
    assert not out.exists()


@pytest.mark.parametrize("decoded_by", ["soundfile", "ffmpeg"])
def test_a_rate_check_that_fails_closes_the_song(tmp_path, monkeypatch, decoded_by):
    """The song is open (through ffmpeg: decoded into a temporary folder) when its rate is
    checked; a refused rate closes it and removes the folder before the error comes out."""
    import soundfile as sf

    opened, folders = [], []

    class Recording(sf.SoundFile):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if self.mode == "r":
                opened.append(self)

    audio = noise(2, 4000).numpy()
    if decoded_by == "soundfile":
        song = _song(tmp_path, audio, 22050)
    else:  # not audio to libsndfile; "ffmpeg" decodes it into the reader's temporary folder
        song = tmp_path / "song.m4a"
        song.write_bytes(b"not audio libsndfile reads")

        def decode_with_ffmpeg(path, folder):
            folders.append(Path(folder))
            return _song(Path(folder), audio, 22050, "decoded.wav")

        monkeypatch.setattr(streaming, "decode_with_ffmpeg", decode_with_ffmpeg)

    def tractable_rates(from_hz, to_hz):
        raise DataError(f"cannot resample {from_hz} Hz to {to_hz} Hz")

    monkeypatch.setattr(streaming.sf, "SoundFile", Recording)
    monkeypatch.setattr(streaming, "tractable_rates", tractable_rates)
    sep = Separator(tiny_model(), device="cpu")
    out = tmp_path / "out"
    with pytest.raises(DataError, match="cannot resample 22050 Hz"):
        sep.separate_file(song, [out / f"{s}.wav" for s in sep.sources])
    with pytest.raises(DataError, match="cannot resample 22050 Hz"):
        streaming.SongReader(song, 22050, 2)
    assert len(opened) == 2 and all(f.closed for f in opened)
    assert len(folders) == (2 if decoded_by == "ffmpeg" else 0)
    assert not any(folder.exists() for folder in folders)
    assert not out.exists()


def test_iter_chunks_is_the_public_tiling_loop():
    """Chunks from any window source tile the song exactly as separate_tensor does."""
    sep = Separator(tiny_model(), device="cpu", chunk_output_samples=300, batch_size=2)
    mixture = noise(2, 2500)

    class Window:
        def __init__(self):
            self.starts = []

        def window(self, start, stop):
            self.starts.append(start)
            out = torch.zeros(2, stop - start)
            lo, hi = max(start, 0), min(stop, mixture.shape[-1])
            out[:, lo - start:hi - start] = mixture[:, lo:hi]
            return out

    source = Window()
    chunks = list(sep.iter_chunks(mixture.shape[-1], source))
    assert len(chunks) == sep.plan(mixture.shape[-1]).num_chunks > 1
    assert source.starts == sorted(source.starts)  # a stream only ever moves forward
    whole = sep.separate_tensor(mixture)
    torch.testing.assert_close(torch.cat([est for est, _ in chunks], -1), whole.stems)
    torch.testing.assert_close(torch.cat([raw for _, raw in chunks], -1), whole.unclipped)


def test_any_rate_call_measures_the_bounds_at_the_model_rate():
    from waveunet.metrics import bound_stats

    model = overshooting_model()
    sep = Separator(model, device="cpu", chunk_output_samples=300)
    audio = noise(1, 4410, scale=0.9).numpy()
    result = sep.separate(audio, 44100, bound_statistics=True)
    assert result.stems.shape == (2, 1, 4410) and result.stems.abs().max() <= 1.0
    model_rate = sep.separate_tensor(torch.from_numpy(
        np.ascontiguousarray(resample(np.tile(audio, (2, 1)), 44100, 22050))))
    expected = bound_stats(model_rate.stems, model_rate.unclipped, bounds=(-1.0, 1.0))
    assert result.bound_statistics == expected
    assert expected[0]["clipped_count"] > 0
    assert sep.separate(audio, 44100).bound_statistics is None  # only when asked for
