"""File stamps change when a file does, and name what cannot be read."""

import os

from terramask.stamps import file_stamp, folder_stamps


def test_a_file_stamp_changes_with_the_file_and_falls_back_to_its_name(tmp_path):
    path = tmp_path / "a.tif"
    path.write_bytes(b"one")
    before = file_stamp(path)
    assert before.startswith(f"{path}:3:")
    path.write_bytes(b"three")
    os.utime(path, ns=(1, 1))
    assert file_stamp(path) == f"{path}:5:1" != before
    assert file_stamp("https://example.com/x.tif") == "https://example.com/x.tif"
    assert file_stamp(tmp_path / "missing.tif", label="m") == "m"


def test_folder_stamps_list_the_files_by_name(tmp_path):
    (tmp_path / "b.bin").write_bytes(b"xx")
    (tmp_path / "a.json").write_bytes(b"{}")
    (tmp_path / "sub").mkdir()
    assert [s.split(":")[0] for s in folder_stamps(tmp_path)] == ["a.json", "b.bin"]
