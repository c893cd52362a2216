"""The key set a store trusts: ``trust.json``, or a store's older ``keys/*.pub``.

Only what is trusted now, and replacing it whole: whether a new key set may replace it is
decided by walking the channel's key chain (``runtime.ota.keychain``, called by the updater),
which hands over a verified set.

Cryptography is imported inside these functions alone: serving and loading installed bundles
never need it (~10 MB of a server's resident memory).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgebundle.runtime.errors import BundleError, RollbackError, StoreError
from edgebundle.runtime.fsio import remove_durably, write_durably
from edgebundle.runtime.store import _audit
from edgebundle.runtime.store._files import list_names, read_small, remove_dir

if TYPE_CHECKING:
    from edgebundle.runtime.ota.keychain import KeySet

TRUST_FILE = "trust.json"
# Stores made before the key chain: provisioned keys, any one of which signs.
KEYS_DIR = "keys"
_MAX_TRUST_BYTES = 16 * 1024  # 16 keys of ~50 bytes each, with room to spare


def read_trust(root: Path) -> KeySet:
    """``trust.json``, or the provisioned ``keys/*.pub`` until the first rotation replaces them."""
    from edgebundle.runtime.ota.keychain import TRUST_FORMAT, KeySet, parse_key_set
    from edgebundle.runtime.signing import load_key_dir

    data = read_small(root / TRUST_FILE, _MAX_TRUST_BYTES)
    if data is not None:
        try:
            return parse_key_set(data, TRUST_FILE, TRUST_FORMAT)
        except BundleError as e:
            raise StoreError(f"{root / TRUST_FILE} is corrupt: {e}") from None
    keys = load_key_dir(root / KEYS_DIR)
    if not keys:
        raise StoreError(f"{root} holds no trusted keys ({TRUST_FILE})")
    return KeySet(version=0, threshold=1, keys=tuple(keys), expires=None)


def write_trust(root: Path, key_set: KeySet) -> None:
    from edgebundle.runtime.ota.keychain import TRUST_FORMAT

    write_durably(root / TRUST_FILE, key_set.to_bytes(TRUST_FORMAT))


def adopt_trust(root: Path, key_set: KeySet, *, origin: str) -> None:
    """Trust exactly ``key_set``, newer than the set trusted now, and audit the rotation.

    One rename switches the trust; older ``keys/*.pub`` go after it. The caller holds the
    store's exclusive lock, so the version compared is the one replaced.
    """
    current = read_trust(root)
    if key_set.version <= current.version:
        raise RollbackError(
            f"key set version {key_set.version} is not newer than {current.version} "
            "(replayed key statement)"
        )
    write_trust(root, key_set)
    legacy = root / KEYS_DIR
    if legacy.is_dir():
        remove_durably(legacy, list_names(legacy))
        remove_dir(legacy)
    _audit.append(
        root,
        "keys-rotated",
        origin=origin,
        reason=f"{key_set.describe()}: " + ", ".join(key_set.keyids()),
    )
