"""Pack a folder of small files (an ImageFolder tree of JPEGs) into one file, and back.

A cluster node or a rented GPU often takes data as one upload with a size cap. Archive formats
spend 100-500 bytes of headers per member, which on CIFAR-10's 60,000 JPEGs of about 950 bytes
adds 10-50% to the upload; this format spends about 4 bytes per file (a zlib-compressed index):

    python -m ablations.pack pack ../shared/data/cifar10-jpeg cifar10-jpeg.pack
    python -m ablations.pack unpack cifar10-jpeg.pack /scratch/data/cifar10-jpeg

Layout: ``b"GPPACK1\\n"``, the index length as 8 little-endian bytes, the zlib-compressed JSON
index ``[[relative_path, size], ...]``, then every file's bytes in index order. Unpacking checks
the total size, so a truncated upload fails with a clear error instead of a short dataset.
"""

from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path

MAGIC = b"GPPACK1\n"


def pack(root: str | Path, out: str | Path) -> int:
    """Write every file under ``root`` (sorted paths) into ``out``; returns the file count."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{str(root)!r} is not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    index = [[p.relative_to(root).as_posix(), p.stat().st_size] for p in files]
    blob = zlib.compress(json.dumps(index).encode(), 9)
    with open(out, "wb") as f:
        f.write(MAGIC + len(blob).to_bytes(8, "little") + blob)
        for p in files:
            f.write(p.read_bytes())
    return len(files)


def unpack(pack_file: str | Path, root: str | Path) -> int:
    """Recreate the packed tree under ``root``; returns the file count."""
    data = Path(pack_file).read_bytes()
    if not data.startswith(MAGIC):
        raise ValueError(f"{str(pack_file)!r} is not a pack made by ablations.pack")
    n = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 8], "little")
    start = len(MAGIC) + 8
    index = json.loads(zlib.decompress(data[start : start + n]))
    offset = start + n
    expected = offset + sum(size for _, size in index)
    if expected != len(data):
        raise ValueError(f"{str(pack_file)!r} holds {len(data)} bytes, its index says {expected}")
    root = Path(root)
    for rel, size in index:
        target = root / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise ValueError(f"unsafe path {rel!r} in {str(pack_file)!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data[offset : offset + size])
        offset += size
    return len(index)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="folder -> one file")
    p.add_argument("root")
    p.add_argument("out")
    u = sub.add_parser("unpack", help="one file -> folder")
    u.add_argument("pack_file")
    u.add_argument("root")
    args = parser.parse_args(argv)
    if args.command == "pack":
        count = pack(args.root, args.out)
        print(f"packed {count} files from {args.root} into {args.out}")
    else:
        count = unpack(args.pack_file, args.root)
        print(f"unpacked {count} files into {args.root}")


if __name__ == "__main__":
    main()
