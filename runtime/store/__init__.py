"""The device's model store: trusted keys, installed bundles, and the active version per model.

A store is a directory::

    store.json                         {"format": "edgebundle.store/1"}: marks a store
    trust.json                         the trusted key set: keys, threshold, chain version
                                       (``runtime.ota.keychain.KeySet``); stores made before the
                                       key chain hold keys/<keyid>.pub instead, read as
                                       provisioned keys until the first rotation replaces them
    ota.json                           the last channel index serial accepted (OtaState)
    state.json                         the one pointer file, replaced atomically (StoreState)
    bundles/<name>/<version>.bundle    each installed bundle file, kept whole
    audit.log                          append-only JSON lines (AuditEvent)
    lock                               flock'ed: exclusively by writers, shared by loaders

Whole bundle files rather than unpacked directories: one file is one atomic rename, and
``load_active`` checks the file's sha256 against the one ``state.json`` recorded at install
*before* parsing anything (verify bytes, then parse), so disk corruption or a swapped file is
caught. Integrity at load rests on that recorded sha256, taken after the signature verified at
install (``runtime.bundle.open_installed``); the signature is not checked again, since the keys
live in this same directory, so loading never needs cryptography (~10 MB of a server's
resident memory). A key rotation (``adopt_trust``, after the updater verified the channel's
key chain) therefore cannot strand an installed bundle: the keys it drops sign no new install,
and what they signed before stays loadable by its pin.

Crash safety: every write is temp file + fsync + rename + fsync(directory) (``runtime.fsio``)
and happens in an order where a crash at any instant leaves ``state.json`` naming only complete,
durable files: the new bundle file is written before the state switch, the replaced
``state.json`` *is* the switch, and files are deleted only after the switch stops naming them.
Leftovers of a crash (unreferenced bundles, temp files) are swept by the next write.

Per model the store keeps exactly the active and the previous version's files. Anti-rollback:
a version below the highest ever installed, or equal to an installed one with other content,
or marked bad, is refused; reinstalling the active version's exact bytes is a no-op.
``rollback`` swaps active and previous (so rolling back twice restores the original);
``highest_seen`` is unchanged by it, since anti-rollback is about what was installed. ``remove``
deletes a model's files but keeps its ``highest_seen`` and bad versions for the same reason.

One module per concern, each private: ``_store`` (``Store``: the lock around each change, and
loading), ``_install`` (the install transaction), ``_decisions`` (what a change does to a
model's pointers, decided without the disk), ``_state`` (the ``state.json`` format),
``_switch`` (reading and replacing ``state.json``), ``_bundles`` (the kept files), ``_trust``,
``_ota``, ``_audit``, ``_marker`` (``store.json``), ``_lock``, ``_files`` and ``_clock``.
"""

from edgebundle.runtime.store._audit import AUDIT_EVENTS, AUDIT_FILE, AuditEvent
from edgebundle.runtime.store._bundles import BUNDLE_SUFFIX, BUNDLES_DIR
from edgebundle.runtime.store._install import InstallResult
from edgebundle.runtime.store._lock import LOCK_FILE, LOCK_TIMEOUT
from edgebundle.runtime.store._marker import STORE_FILE, STORE_FORMAT, StoreMarker
from edgebundle.runtime.store._ota import OTA_FILE, OTA_FORMAT, OtaState
from edgebundle.runtime.store._state import (
    STATE_FILE,
    STATE_FORMAT,
    InstalledVersion,
    ModelState,
    SelftestSummary,
    StoreState,
)
from edgebundle.runtime.store._store import LoadedModel, RemoveResult, RollbackResult, Store
from edgebundle.runtime.store._trust import KEYS_DIR, TRUST_FILE

__all__ = [
    "AUDIT_EVENTS",
    "AUDIT_FILE",
    "BUNDLES_DIR",
    "BUNDLE_SUFFIX",
    "KEYS_DIR",
    "LOCK_FILE",
    "LOCK_TIMEOUT",
    "OTA_FILE",
    "OTA_FORMAT",
    "STATE_FILE",
    "STATE_FORMAT",
    "STORE_FILE",
    "STORE_FORMAT",
    "TRUST_FILE",
    "AuditEvent",
    "InstallResult",
    "InstalledVersion",
    "LoadedModel",
    "ModelState",
    "OtaState",
    "RemoveResult",
    "RollbackResult",
    "SelftestSummary",
    "Store",
    "StoreMarker",
    "StoreState",
]
