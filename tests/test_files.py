"""Atomic writes: all or nothing, with the permissions of a normally created file."""

import os
import stat

import pytest

from waveunet.files import atomic_write, atomic_write_text


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
