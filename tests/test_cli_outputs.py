"""``fastnet train``'s outputs: every way a save or plot would fail is refused before training."""

from __future__ import annotations

import os

import pytest

from fastnet.cli import main

pytestmark = pytest.mark.usefixtures("cli_env")  # no MNIST, no network (conftest)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, argv, message, code=1):
    got, out, err = run(capsys, "train", "--dataset", "spiral", "--epochs", "1", *argv)
    assert got == code and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "error:" in lines[0] and message in lines[0], err
    assert "epoch" not in out  # refused before any training


def test_save_and_plot_naming_one_file_is_refused(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    same = str(tmp_path / "same.png")
    refused(capsys, ["--save", same, "--plot", same], "name the same file", code=2)
    assert not os.path.exists(same)


def test_empty_output_names_are_refused(capsys):
    refused(capsys, ["--save", ""], "--save needs a file name", code=2)


def test_a_file_in_place_of_the_folder(capsys, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    refused(capsys, ["--save", str(afile / "net.npz")], "is a file, not a folder")


def test_a_folder_no_one_can_write_is_found_before_training(capsys):
    if not os.path.isdir("/proc"):
        pytest.skip("needs /proc, a folder no file can be created in")
    refused(capsys, ["--save", "/proc/net.npz"], "cannot write in folder /proc")
