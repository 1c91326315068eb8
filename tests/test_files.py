"""Atomic writes: all or nothing, with the permissions of a normally created file."""

import os
import stat

import pytest

from waveunet.files import (
    DIR_MODE,
    MAX_COMPONENT_BYTES,
    UNSAFE_FILENAME_CHARACTERS,
    atomic_write,
    atomic_write_text,
    safe_filename,
    safe_path_component,
    temporary_next_to,
)


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "report.md"
    atomic_write_text(target, "first")

    def crash(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash)
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]  # no temporary left behind


def test_an_interrupt_a_writer_turned_into_its_own_error_stays_an_interrupt(tmp_path):
    """torch.save raises RuntimeError("unexpected pos") when Ctrl-C / SIGTERM lands inside it:
    the caller must see the interrupt (exit 130 / 143 with the resume hint), not a traceback."""
    target = tmp_path / "last.pt"

    def interrupted_save(tmp: str) -> None:
        try:
            raise KeyboardInterrupt
        finally:
            raise RuntimeError("unexpected pos 111616 vs 111536")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, interrupted_save)
    assert list(tmp_path.iterdir()) == []


def _umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def test_atomic_files_get_the_permissions_of_a_normally_created_file(tmp_path):
    path = atomic_write_text(tmp_path / "sub" / "summary.json", "{}")
    plain = tmp_path / "plain.txt"
    plain.write_text("{}")  # what open() gives under this process's umask
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~_umask(), oct(mode)
    assert mode != 0o600 or _umask() == 0o077  # not mkstemp's owner-only mode


def test_the_temporary_keeps_the_extension(tmp_path):
    seen = []
    atomic_write(tmp_path / "figure.png", lambda tmp: (seen.append(tmp), open(tmp, "wb").close()))
    assert seen[0].endswith(".png")


def test_a_generated_dataset_folder_gets_the_mode_of_a_normally_made_folder(synth_root, tmp_path):
    """synth writes into a temporary folder (mkdtemp: 0700) and renames it into place; the
    dataset must then look like any folder made with mkdir (DIR_MODE)."""
    plain = tmp_path / "made"
    plain.mkdir()
    assert stat.S_IMODE(synth_root.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == DIR_MODE


def test_temporary_next_to(tmp_path):
    tmp = temporary_next_to(tmp_path / "song" / ".." / "vocals.flac")
    assert tmp.is_file() and tmp.suffix == ".flac" and tmp.name.startswith(".vocals.")
    assert tmp.parent.resolve() == tmp_path.resolve()


MUSDB18_NAMES = ("Mike's Song (Live) [2]", "The Easton Ellises (Baumi) - SDRNR",
                 "James Elder & Mark M Thompson - The English Actor", "M.E.R.C. Music - Knockout")
HOSTILE_NAMES = ("", ".", "..", "...wav", "a/b: c", "..\\..\\etc", "tab\there", "name. ", " . ",
                 'what?*"<>|', "\x7f.hidden", "zero\u200bwidth", "x" * 300, "\u00e9" * 150,
                 "a" * 199 + " b")


def test_safe_filename_is_the_path_component_rule_made_stricter():
    """One rule: a safe file name is a safe path component as it is, and the two differ only
    where the file name must also suit other systems."""
    for name in MUSDB18_NAMES:
        assert safe_filename(name) == safe_path_component(name) == name
    for name in MUSDB18_NAMES + HOSTILE_NAMES:
        portable = safe_filename(name)
        assert portable and safe_path_component(portable) == portable, name
        assert len(portable.encode("utf-8")) <= MAX_COMPONENT_BYTES, name
        assert portable.isprintable() and not set(portable) & UNSAFE_FILENAME_CHARACTERS, name
        assert portable == portable.strip(". "), name
    assert (safe_filename(".."), safe_path_component("..")) == ("track", "__")
    assert (safe_filename("a/b: c"), safe_path_component("a/b: c")) == ("a_b_ c", "a_b: c")
    assert safe_filename("x" * 300) == safe_path_component("x" * 300) == "x" * MAX_COMPONENT_BYTES
    assert safe_filename("\u00e9" * 150) == "\u00e9" * (MAX_COMPONENT_BYTES // 2)
    # cut after a space: the path component keeps it, the file name drops it
    assert safe_path_component("a" * 199 + " b") == "a" * 199 + " "
    assert safe_filename("a" * 199 + " b") == "a" * 199


def test_strict_json_of_arrays_tensors_and_versions():
    """dumps_json: numpy and torch values as plain JSON, NaN and inf as null, torch's version
    string as a string (it is a str of torch's own type, not a tensor)."""
    import json

    import numpy as np
    import torch

    from waveunet.files import dumps_json

    value = {"a": np.float32(1.5), "b": np.array([1.0, np.nan]), "c": torch.tensor([2.0, np.inf]),
             "d": np.int64(3), "e": (1, float("-inf")), "f": np.bool_(True),
             "torch": torch.__version__}
    assert json.loads(dumps_json(value)) == {"a": 1.5, "b": [1.0, None], "c": [2.0, None],
                                             "d": 3, "e": [1, None], "f": True,
                                             "torch": str(torch.__version__)}
