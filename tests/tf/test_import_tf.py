"""waveunet import-tf: our TensorFlow checkpoint reader and the original Wave-U-Net's weights.

The fixtures under tests/fixtures/tf were written by scripts/make_tf_fixtures.py with
TensorFlow 2.15 and the original's own model code (3 levels, a few filters, Adam slots,
global_step): the checkpoints, every variable as TensorFlow reads it back, and the
original graph's test-time outputs for a fixed input. No TensorFlow is needed here.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from waveunet.cli import main as cli_main
from waveunet.errors import ConfigError
from waveunet.model.checkpoint import load_checkpoint, load_model
from waveunet.model.network import build_model
from waveunet.separation.inference import Separator
from waveunet.settings.compose import compose
from waveunet.tf.import_tf import (
    OriginalVariables,
    assignments,
    convert,
    import_tf,
    original_variables,
    settings_from_shapes,
)
from waveunet.tf.reader import TFCheckpoint, TFCheckpointError, crc32c, mask_crc, unmask_crc

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tf"
MODELS = ["m4_small", "m5_small", "m1_small", "m6_small", "multi_direct_linear_small"]
ALL = [*MODELS, "not_waveunet"]


def fixture(name: str) -> tuple[dict, dict[str, np.ndarray], Path]:
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    with np.load(FIXTURES / f"{name}.npz") as arrays:
        data = dict(arrays)
    return meta, data, FIXTURES / meta["prefix"]


def max_output_error(model, data: dict[str, np.ndarray]) -> float:
    """Largest |waveunet - TF| over all test-time outputs (TF's layout is (B, T, C))."""
    mixture = torch.from_numpy(data["input"]).permute(0, 2, 1)
    with torch.no_grad():
        estimates = model.eval()(mixture).estimates
    return max(
        float(np.abs(estimates[:, i].permute(0, 2, 1).numpy() - data[f"output/{source}"]).max())
        for i, source in enumerate(model.sources)
    )


def undecidable(meta: dict) -> list[str]:
    """The settings the shapes cannot tell, as the fixture's original used them."""
    settings = meta["original_settings"]
    return [f"model.context={str(settings['context']).lower()}",
            f"model.sample_rate_hz={settings['expected_sr']}",
            f"output.activation={settings['output_activation']}"]


# --------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------


def test_crc32c_check_value_masking_and_long_inputs() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    assert crc32c(b"") == 0
    assert unmask_crc(mask_crc(0xE3069283)) == 0xE3069283 and mask_crc(0) == 0xA282EAD8
    # Long inputs take the many-slices path; it must equal the byte-at-a-time definition.
    rng = np.random.default_rng(0)
    for n in (4096, 4099, 10_007, 70_001):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        expected = _crc32c_reference(data)
        assert crc32c(data) == expected, n
        assert crc32c(data[:-1] + bytes([data[-1] ^ 1])) != expected


def _crc32c_reference(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


@pytest.mark.parametrize("name", ALL)
def test_reader_reads_every_variable_as_tensorflow_does(name: str) -> None:
    _, data, prefix = fixture(name)
    ckpt = TFCheckpoint(prefix)
    expected = sorted(key[len("var/"):] for key in data if key.startswith("var/"))
    assert ckpt.names() == expected
    for var_name in expected:
        value, reference = ckpt.read(var_name), data[f"var/{var_name}"]
        assert value.dtype == reference.dtype, var_name
        assert value.shape == reference.shape, var_name
        np.testing.assert_array_equal(value, reference, err_msg=var_name)
        assert ckpt.entries[var_name].shape == reference.shape


def test_the_files_hold_optimiser_state_and_a_step() -> None:
    meta, _, prefix = fixture("multi_direct_linear_small")
    ckpt = TFCheckpoint(prefix)
    names = ckpt.names()
    assert "global_step" in names and "separator_solver/beta1_power" in names
    assert any(n.endswith("separator/conv1d_10/kernel/Adam_1") for n in names)
    # Creation order is by number, not as strings: 3 down, bottleneck, 3 up, 4 outputs.
    orig = original_variables(ckpt)
    assert orig.convs == ["separator/conv1d"] + [f"separator/conv1d_{i}" for i in range(1, 11)]
    assert orig.step == meta["step"] == 5678
    assert all(n.startswith(("separator_solver/", "global_step")) for n in orig.ignored)
    assert len(orig.ignored) == 2 * 22 + 3  # two Adam slots per variable, beta powers, step
    orig = original_variables(TFCheckpoint(fixture("m5_small")[2]))
    assert orig.interps == ["separator/interp_0", "separator/interp_1", "separator/interp_2"]


def test_prefix_forms(tmp_path: Path) -> None:
    _, _, prefix = fixture("m4_small")
    forms = [prefix, Path(f"{prefix}.index"), Path(f"{prefix}.data-00000-of-00001"),
             prefix.parent]  # a folder with TensorFlow's `checkpoint` state file
    for form in forms:
        assert TFCheckpoint(form).prefix == prefix, form
    # A folder without a state file but with one checkpoint; a state file naming a path on
    # the machine the checkpoint was saved on (as in the published models.zip).
    copy = tmp_path / "copy"
    shutil.copytree(prefix.parent, copy)
    (copy / "checkpoint").unlink()
    assert TFCheckpoint(copy).prefix == copy / prefix.name
    (copy / "checkpoint").write_text(f'model_checkpoint_path: "/home/someone/{prefix.name}"\n')
    assert TFCheckpoint(copy).prefix == copy / prefix.name


# --------------------------------------------------------------------------------------------
# The conversion
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_converted_checkpoint_reproduces_the_original_graph(name: str, tmp_path: Path) -> None:
    meta, data, prefix = fixture(name)
    out = tmp_path / f"{name}.pt"
    import_tf(prefix, out, overrides=meta["waveunet_overrides"])
    model = load_model(out)
    assert max_output_error(model, data) < 1e-5
    settings = meta["original_settings"]
    assert list(model.sources) == settings["source_names"]
    assert model.output_mode.type == settings["output_type"]
    assert model.output_mode.activation == settings["output_activation"]
    payload = load_checkpoint(out)
    assert payload["config"]["import"]["file"] == prefix.name
    assert payload["config"]["import"]["step"] == meta["step"]
    # the Python API uses it like any other checkpoint
    assert Separator.from_checkpoint(out).sources == tuple(settings["source_names"])


def test_the_comparison_sees_a_wrong_mapping() -> None:
    """The 1e-5 check is not vacuous: the left/right weighting and the source order matter."""
    meta, data, prefix = fixture("m5_small")
    model = convert(prefix, overrides=meta["waveunet_overrides"]).model
    with torch.no_grad():
        for logits in model.upsample_logits:
            logits.neg_()  # w weighting the right neighbour instead of the left
    assert max_output_error(model, data) > 1e-3

    meta, data, prefix = fixture("m6_small")
    model = convert(prefix, overrides=meta["waveunet_overrides"]).model
    convs = model.head.convs
    convs[0], convs[1] = convs[1], convs[0]
    assert max_output_error(model, data) > 1e-3


@pytest.mark.parametrize("name", MODELS)
def test_architecture_from_the_shapes(name: str) -> None:
    meta, data, prefix = fixture(name)
    settings = meta["original_settings"]
    imported = convert(prefix, overrides=undecidable(meta))
    model = imported.model
    assert model.config.channels == (1 if settings["mono_downmix"] else 2)
    assert list(model.sources) == settings["source_names"]
    assert model.output_mode.type == settings["output_type"]
    assert model.config.upsampling == settings["upsampling"]
    assert (model.config.levels, model.config.initial_filters) == (3, 3)
    assert max_output_error(model, data) < 1e-5


def paper_shapes(preset: str, *overrides: str) -> OriginalVariables:
    """The variables an original checkpoint of ``preset`` holds (names and shapes only)."""
    cfg = compose("config", [f"model={preset}", *overrides])
    plan = assignments(build_model(cfg.model, cfg.output))
    shapes = {a.tf_name: a.tf_shape for a in plan}
    convs = list(dict.fromkeys(a.tf_name.rsplit("/", 1)[0] for a in plan if "/conv1d" in a.tf_name))
    interps = [a.tf_name for a in plan if "/interp_" in a.tf_name]
    return OriginalVariables(convs=convs, interps=interps, shapes=shapes, step=None, ignored=[])


@pytest.mark.parametrize("preset,given", [
    ("m1", []), ("m4", []), ("m6", []),
    ("m2", ["model.context=false"]), ("m3", ["model.context=true"]),
    ("m5", ["model.sample_rate_hz=22050"]), ("m5_highsr", ["model.sample_rate_hz=44100"]),
])
def test_paper_models_from_the_shapes(preset: str, given: list[str]) -> None:
    cfg = settings_from_shapes(paper_shapes(preset), "ckpt", [*given, "output.activation=tanh"])
    assert cfg.model.name == preset
    reference = compose("config", [f"model={preset}"])
    assert cfg.model == reference.model and cfg.output == reference.output


@pytest.mark.parametrize("preset,overrides,named", [
    ("m2", ["output.activation=tanh"],
     ["the context", "M2: model.context=false", "M3: model.context=true", "--model m2 / m3"]),
    ("m5_highsr", ["output.activation=tanh"],
     ["the sample rate", "M5: model.sample_rate_hz=22050",
      "M5-HighSR: model.sample_rate_hz=44100", "--model m5 / m5_highsr"]),
    ("m4", [], ["the output activation", "output.activation=tanh", "output.activation=linear"]),
    ("m4", ["output=tanh_difference"], None),
])
def test_what_the_shapes_cannot_tell_is_refused_with_the_choices(preset, overrides, named) -> None:
    orig = paper_shapes(preset)
    if named is None:
        assert settings_from_shapes(orig, "ckpt", overrides).model.name == preset
        return
    with pytest.raises(ConfigError) as info:
        settings_from_shapes(orig, "ckpt", overrides)
    message = one_line(info)
    layout = "mono" if preset == "m2" else "stereo"
    assert message.startswith(f"ckpt: the shapes say {layout}")
    for text in named:
        assert text in message


def test_custom_sizes_need_context_rate_and_activation() -> None:
    _, _, prefix = fixture("m4_small")
    with pytest.raises(ConfigError) as info:
        convert(prefix)
    message = one_line(info)
    said = "stereo, 2 sources, difference output, linear upsampling, 3 levels x 3 filters"
    assert said in message
    for text in ("model.context=true", "model.sample_rate_hz=22050", "44100",
                 "output.activation=tanh"):
        assert text in message


def test_unusual_output_counts_and_settings_the_original_never_had() -> None:
    five = paper_shapes("m4", "output=tanh_direct", "model.sources=[a,b,c,d,e]")
    with pytest.raises(ConfigError, match="5 output convolutions.*model.sources"):
        settings_from_shapes(five, "ckpt", ["output.activation=tanh"])
    meta, _, prefix = fixture("m4_small")
    with pytest.raises(ConfigError, match="output.activation=sigmoid: .* only tanh and linear"):
        convert(prefix, overrides=[*meta["waveunet_overrides"], "output.activation=sigmoid"])
    meta, _, prefix = fixture("m5_small")
    with pytest.raises(ConfigError, match="learned with model.context=false"):
        convert(prefix, overrides=[*meta["waveunet_overrides"], "model.context=false"])


# --------------------------------------------------------------------------------------------
# Errors: one line naming the file and what is wrong
# --------------------------------------------------------------------------------------------


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_shape_mismatch() -> None:
    meta, _, prefix = fixture("m4_small")
    with pytest.raises(TFCheckpointError) as info:
        convert(prefix, overrides=[*meta["waveunet_overrides"], "model.initial_filters=4"])
    message = one_line(info)
    assert str(prefix) in message
    assert ("'separator/conv1d/kernel' (down level 0 convolution) has shape [15, 2, 3], "
            "the model expects [15, 2, 4]") in message
    with pytest.raises(TFCheckpointError) as info:
        convert(prefix, model="m4")
    assert "the model expects [15, 2, 24] (the checkpoint: stereo, 2 sources" in one_line(info)


def test_missing_and_left_over_variables() -> None:
    meta, _, prefix = fixture("m4_small")
    with pytest.raises(TFCheckpointError) as info:
        convert(prefix, overrides=[*meta["waveunet_overrides"], "model.upsampling=learned"])
    message = one_line(info)
    assert "missing variable 'separator/interp_0' (learned upsampling of up level 0)" in message
    with pytest.raises(TFCheckpointError) as info:
        convert(prefix, overrides=[*meta["waveunet_overrides"],
                                   "model.sources=[bass,drums,other,vocals]"])
    assert ("missing variable 'separator/conv1d_8/kernel' (output convolution for 'drums')"
            in one_line(info))
    meta, _, prefix = fixture("m5_small")
    with pytest.raises(TFCheckpointError) as info:
        convert(prefix, overrides=[*meta["waveunet_overrides"], "model.upsampling=linear"])
    assert "no place for 'separator/interp_0' (3 variable(s) left over)" in one_line(info)
    # A checkpoint whose numbering has a hole.
    ckpt = TFCheckpoint(prefix)
    del ckpt.entries["separator/conv1d_3/bias"]
    with pytest.raises(TFCheckpointError) as info:
        original_variables(ckpt)
    assert "missing variable 'separator/conv1d_3/bias'" in one_line(info)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(TFCheckpointError) as info:
        convert(tmp_path / "nothing-123")
    assert "no TensorFlow checkpoint there (expected nothing-123.index" in one_line(info)
    garbage = tmp_path / "garbage-1.index"
    garbage.write_bytes(b"not a table" * 20)
    with pytest.raises(TFCheckpointError) as info:
        convert(garbage)
    message = one_line(info)
    assert f"{garbage}: not a readable TensorFlow checkpoint index (no table magic" in message
    with pytest.raises(TFCheckpointError) as info:
        convert(fixture("not_waveunet")[2])
    message = one_line(info)
    assert "no 'separator/conv1d*' variables (dense/bias, dense/kernel, global_step)" in message
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(Path(f"{fixture('m4_small')[2]}.index"), lone / "m4_small-1234.index")
    with pytest.raises(TFCheckpointError) as info:
        convert(lone)
    message = one_line(info)
    data_file = lone / "m4_small-1234.data-00000-of-00001"
    assert f"{data_file}: cannot read the checkpoint's data" in message
    folder = tmp_path / "two"
    folder.mkdir()
    (folder / "a.index").touch()
    (folder / "b.index").touch()
    with pytest.raises(TFCheckpointError, match="2 TensorFlow checkpoint index files"):
        convert(folder)


def test_corrupt_files(tmp_path: Path) -> None:
    meta, _, prefix = fixture("m4_small")
    copy = tmp_path / "m4"
    shutil.copytree(prefix.parent, copy)
    copied = copy / prefix.name
    overrides = meta["waveunet_overrides"]
    data_file = Path(f"{copied}.data-00000-of-00001")
    original_data = data_file.read_bytes()

    entry = TFCheckpoint(copied).entries["separator/conv1d_2/kernel"]
    corrupt = bytearray(original_data)
    corrupt[entry.offset + 17] ^= 0x10
    data_file.write_bytes(bytes(corrupt))
    with pytest.raises(TFCheckpointError) as info:
        convert(copied, overrides=overrides)
    assert f"{data_file}: CRC32C mismatch in 'separator/conv1d_2/kernel'" in one_line(info)

    data_file.write_bytes(original_data[:entry.offset + 10])
    with pytest.raises(TFCheckpointError) as info:
        convert(copied, overrides=overrides)
    assert "(truncated file)" in one_line(info)

    data_file.write_bytes(original_data)
    index_file = Path(f"{copied}.index")
    index = bytearray(index_file.read_bytes())
    index[40] ^= 0x01  # inside the first data block
    index_file.write_bytes(bytes(index))
    with pytest.raises(TFCheckpointError) as info:
        convert(copied, overrides=overrides)
    assert "CRC32C mismatch in the block at byte 0" in one_line(info)


# --------------------------------------------------------------------------------------------
# The command, end to end
# --------------------------------------------------------------------------------------------


def test_cli_refusals_are_one_line_and_nothing_is_overwritten(tmp_path: Path, capsys) -> None:
    meta, _, prefix = fixture("m4_small")
    out = tmp_path / "m4.pt"
    assert cli_main(["import-tf", str(prefix), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("waveunet import-tf: error: ") and err.count("\n") == 1
    assert not out.exists()
    out.write_text("a user's file")
    args = ["import-tf", str(prefix), *undecidable(meta), "-o", str(out)]
    assert cli_main(args) == 2
    assert "already exists (--force replaces it)" in capsys.readouterr().err
    assert out.read_text() == "a user's file"
    assert cli_main([*args, "--force"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"m4_small-1234 \(step 1234\) -> .*m4\.pt: custom, accompaniment, vocals, "
                     r"tanh_difference, 22050 Hz", printed)
    assert load_checkpoint(out)["config"]["import"]["step"] == 1234


def test_import_then_separate_and_evaluate(tmp_path: Path, synth_root: Path) -> None:
    meta, _, prefix = fixture("m6_small")
    out = tmp_path / "m6_small.pt"
    assert cli_main(["import-tf", str(prefix.parent), "-o", str(out), *undecidable(meta)]) == 0

    rate = 44100
    t = np.arange(int(1.5 * rate)) / rate
    song = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)], axis=1)
    sf.write(tmp_path / "song.wav", song.astype(np.float32), rate)
    stems = tmp_path / "separated"
    assert cli_main(["separate", str(tmp_path / "song.wav"), "-c", str(out), "-o", str(stems),
                     "-q"]) == 0
    for source in ("bass", "drums", "other", "vocals"):
        audio, stem_rate = sf.read(stems / "m6_small" / "song" / f"{source}.wav")  # <model>/
        assert stem_rate == rate and audio.shape == song.shape
        assert np.abs(audio).max() > 0

    report = tmp_path / "eval"
    assert cli_main(["evaluate", f"checkpoint={out}", "data=musdb_hq", f"data.root={synth_root}",
                     f"data.cache_dir={tmp_path / 'cache'}", f"out_dir={report}",
                     "progress=false"]) == 0
    summary = json.loads((report / "summary.json").read_text())
    assert set(summary["sources"]) == {"bass", "drums", "other", "vocals"}
    frames = summary["tracks"][0]["metrics"]["SDR"]["vocals"]["frames"]
    assert len(frames) == 2 and all(np.isfinite(frames))


def test_each_fixture_names_where_every_file_of_the_original_code_came_from():
    """The original code was read from three commits of two repositories (the fixture script's
    ORIGINAL_CODE); each fixture's JSON says so file by file."""
    import importlib.util

    script = FIXTURES.parents[2] / "scripts" / "make_tf_fixtures.py"
    spec = importlib.util.spec_from_file_location("make_tf_fixtures", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # TensorFlow is imported only when a model is written
    sources = module.ORIGINAL_CODE
    assert sources["Models/OutputLayer.py"].startswith("mainak0907/")
    assert sources["Utils.py"].startswith("f90/Wave-U-Net@c102b54")
    metas = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]
    described = [m for m in metas if "original_settings" in m]  # not_waveunet has none
    assert len(described) == 5
    assert all(m["original_code"] == sources for m in described)


def test_an_override_without_a_value_is_one_line(tmp_path: Path, capsys) -> None:
    _, _, prefix = fixture("m4_small")
    assert cli_main(["import-tf", str(prefix), "model.levels", "-o", str(tmp_path / "m.pt")]) == 2
    assert "override 'model.levels': expected key=value" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_out_as_a_folder_is_one_clear_line_with_or_without_force(tmp_path: Path,
                                                                      capsys) -> None:
    meta, _, prefix = fixture("m4_small")
    args = ["import-tf", str(prefix), *undecidable(meta), "-o", str(tmp_path)]
    for extra in ([], ["--force"]):
        assert cli_main([*args, *extra]) == 2
        assert capsys.readouterr().err == (f"waveunet import-tf: error: -o {tmp_path} is a "
                                           "directory; give a file name ending in .pt\n")
    assert list(tmp_path.iterdir()) == []
    # missing folders above -o are made, as the other commands make their output folders
    out = tmp_path / "new" / "folder" / "m4.pt"
    assert cli_main(["import-tf", str(prefix), *undecidable(meta), "-o", str(out)]) == 0
    assert load_checkpoint(out)["config"]["import"]["step"] == 1234
