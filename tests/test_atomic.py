"""utils.atomic: a write either replaces the file completely or leaves the old one untouched."""

import os
import stat

import numpy as np
import pytest

from utils.atomic import atomic_open, save_npz_atomic, write_text_atomic


def test_write_replaces_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    write_text_atomic(path, "one")
    write_text_atomic(path, "two")
    assert path.read_text() == "two"
    assert os.listdir(path.parent) == ["a.txt"]


def test_interrupted_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    write_text_atomic(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(path, "w") as f:
            f.write("half of the new content")
            raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_npz_keeps_its_name_and_content(tmp_path):
    path = tmp_path / "depth.npz"
    save_npz_atomic(path, depth=np.arange(6, dtype=np.float32).reshape(2, 3))
    with np.load(path) as npz:
        assert np.array_equal(npz["depth"], np.arange(6, dtype=np.float32).reshape(2, 3))


def test_written_files_get_the_mode_of_a_plain_open(tmp_path):
    old = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
        with open(tmp_path / "b.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "b.txt").st_mode) == 0o640
