"""Atomic writes: all or nothing, with the permissions of a normally created file."""

import os
import stat

import pytest

from waveunet.files import DIR_MODE, FILE_MODE, atomic_write, atomic_write_text, temporary_next_to


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


def test_atomic_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "sub" / "summary.json", "{}")
    finally:
        os.umask(umask)
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode & 0o044, oct(mode)  # readable by others, unlike mkstemp's 0600


def test_the_temporary_keeps_the_extension(tmp_path):
    seen = []
    atomic_write(tmp_path / "figure.png", lambda tmp: (seen.append(tmp), open(tmp, "wb").close()))
    assert seen[0].endswith(".png")


def test_modes_follow_the_umask(tmp_path):
    folder = tmp_path / "made"
    folder.mkdir()
    assert stat.S_IMODE(folder.stat().st_mode) == DIR_MODE
    made = tmp_path / "plain.txt"
    made.write_text("x")
    assert stat.S_IMODE(made.stat().st_mode) == FILE_MODE


def test_temporary_next_to(tmp_path):
    tmp = temporary_next_to(tmp_path / "song" / ".." / "vocals.flac")
    assert tmp.is_file() and tmp.suffix == ".flac" and tmp.name.startswith(".vocals.")
    assert tmp.parent.resolve() == tmp_path.resolve()
