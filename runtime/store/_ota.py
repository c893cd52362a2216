"""``ota.json``: the highest channel index serial the store accepted, so no older index, one an
attacker replays, is acted on again."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

from edgebundle.runtime._json import dumps_canonical, loads_strict
from edgebundle.runtime.document import COUNT, Document, constant, load
from edgebundle.runtime.errors import ManifestError, RollbackError, StoreError
from edgebundle.runtime.fsio import write_durably
from edgebundle.runtime.store._files import read_small

OTA_FORMAT = "edgebundle.ota/2"
# ota/1 also carried the version of the single-file key rotation; trust.json holds trust now.
_LEGACY_OTA_FORMAT = "edgebundle.ota/1"
OTA_FILE = "ota.json"
_MAX_OTA_BYTES = 4096


@dataclass(frozen=True, kw_only=True, slots=True)
class OtaState(Document):
    """``ota.json``: the highest channel index serial accepted, so no older one is replayed."""

    format: Annotated[str, constant(OTA_FORMAT, "OTA state")] = OTA_FORMAT
    last_serial: Annotated[int, COUNT] = 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> OtaState:
        if d.get("format") == _LEGACY_OTA_FORMAT:
            return cls(last_serial=load(_LegacyOtaState, d, context).last_serial)
        return load(cls, d, context)


@dataclass(frozen=True, kw_only=True, slots=True)
class _LegacyOtaState:
    """``ota.json`` as stores wrote it before ``trust.json`` took over ``key_version``."""

    format: Annotated[str, constant(_LEGACY_OTA_FORMAT, "OTA state")]
    last_serial: Annotated[int, COUNT]
    key_version: Annotated[int, COUNT]


def read_ota(root: Path) -> OtaState:
    """``root``'s OTA state; serial 0 before the first accepted index."""
    path = root / OTA_FILE
    data = read_small(path, _MAX_OTA_BYTES)
    if data is None:
        return OtaState()
    try:
        return OtaState.from_dict(loads_strict(data, OTA_FILE))
    except ManifestError as e:
        raise StoreError(f"{path} is corrupt: {e}") from None


def record_serial(root: Path, serial: int) -> None:
    """Remember an accepted index serial, refusing a lower one as a replay. The caller holds the
    store's exclusive lock: reading and writing must not interleave with another writer's."""
    ota = read_ota(root)
    if serial < ota.last_serial:
        raise RollbackError(
            f"channel index serial {serial} is older than {ota.last_serial} already "
            "seen (replayed index)"
        )
    if serial > ota.last_serial:
        write_durably(root / OTA_FILE, dumps_canonical(replace(ota, last_serial=serial).to_dict()))
