"""ablations.pack: a folder of small files into one file and back, byte for byte."""

import json
import zlib

import pytest

from ablations import pack


def tree(root):
    files = {
        "train/cat/0000.jpg": b"\xff\xd8cat",
        "train/dog/0000.jpg": b"",
        "test/a.txt": b"x" * 9,
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_round_trip_keeps_every_file(tmp_path):
    files = tree(tmp_path / "src")
    assert pack.pack(tmp_path / "src", tmp_path / "data.pack") == 3
    assert pack.unpack(tmp_path / "data.pack", tmp_path / "dst") == 3
    for rel, data in files.items():
        assert (tmp_path / "dst" / rel).read_bytes() == data
    overhead = (tmp_path / "data.pack").stat().st_size - sum(map(len, files.values()))
    assert overhead < 100  # magic, length and a compressed index


def test_truncated_and_foreign_files_are_refused(tmp_path):
    tree(tmp_path / "src")
    pack.pack(tmp_path / "src", tmp_path / "data.pack")
    data = (tmp_path / "data.pack").read_bytes()
    (tmp_path / "cut.pack").write_bytes(data[:-3])
    with pytest.raises(ValueError, match=r"cut\.pack' holds \d+ bytes, its index says"):
        pack.unpack(tmp_path / "cut.pack", tmp_path / "dst")
    (tmp_path / "other.pack").write_bytes(b"PK\x03\x04 not ours")
    with pytest.raises(ValueError, match=r"is not a pack made by ablations\.pack"):
        pack.unpack(tmp_path / "other.pack", tmp_path / "dst")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        pack.pack(tmp_path / "missing", tmp_path / "x.pack")


def test_paths_leaving_the_target_are_refused(tmp_path):
    index = zlib.compress(json.dumps([["../evil.txt", 1]]).encode())
    blob = pack.MAGIC + len(index).to_bytes(8, "little") + index + b"!"
    (tmp_path / "evil.pack").write_bytes(blob)
    with pytest.raises(ValueError, match=r"unsafe path '\.\./evil\.txt'"):
        pack.unpack(tmp_path / "evil.pack", tmp_path / "dst")
    assert not (tmp_path / "evil.txt").exists()
