"""A reproducible .tar.gz: sorted members, one fixed time, owner and mode, no gzip name or time,
so the same inputs give the same bytes on any machine."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Mapping
from pathlib import Path

EXECUTABLE = 0o755
REGULAR = 0o644


def write_tarball(
    out: Path, top: str, files: Mapping[str, tuple[Path | bytes, int]], mtime: int
) -> None:
    """``out`` holding ``top/NAME`` for each NAME in ``files`` (its content and mode) and the
    directories above them."""
    members = {f"{top}/{name}": source for name, source in files.items()}
    parents = (name.split("/") for name in members)
    directories = {"/".join(parts[:depth]) for parts in parents for depth in range(1, len(parts))}
    with out.open("wb") as raw, gzip.GzipFile(
        filename="", mode="wb", fileobj=raw, mtime=mtime, compresslevel=6
    ) as zipped, tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(directories | members.keys()):
            info = _info(name, mtime)
            if name in directories:
                info.type, info.mode = tarfile.DIRTYPE, EXECUTABLE
                tar.addfile(info)
                continue
            content, info.mode = members[name]
            data = content.read_bytes() if isinstance(content, Path) else content
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _info(name: str, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info
