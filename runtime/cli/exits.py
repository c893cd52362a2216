"""``bundle-runtime``'s exit codes, and the one table from domain error class to exit code.

An error's class says what kind of thing went wrong, and ``EXIT_CODES`` gives each kind its
code. The same kind can mean something else in another input: a ``SignatureError`` rejects a
bundle, but in a channel's index it refuses the channel; a ``ChannelError`` refuses the channel
``update`` reads, but in ``serve --channel`` it is a wrong argument. The few steps where that
happens say so with ``blame`` and one of the three ``Blame``s below; every other step leaves
it to the table.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType

from edgebundle.runtime.errors import (
    BundleError,
    ChannelError,
    ChannelUnreachableError,
    CompatibilityError,
    FleetError,
    FormatError,
    InputError,
    IntegrityError,
    KeyFileError,
    ManifestError,
    RollbackError,
    SelftestError,
    ServeError,
    SignatureError,
    StoreError,
)


@enum.unique
class ExitCode(enum.IntEnum):
    """One meaning per number, whichever command exits with it."""

    OK = 0
    ROW_ERRORS = 1  # score: at least one row got an error record; the others were scored
    USAGE = 2  # bad arguments, a store error, input that cannot be read at all
    REJECTED = 3  # a bundle failed verification or its selftest, or cannot run here
    ROLLBACK_REFUSED = 4  # the store refused the bundle's version (anti-rollback, marked bad)
    CHANNEL_UNREACHABLE = 5  # update: the channel could not be read; an outage, retry later
    CHANNEL_REJECTED = 6  # update: forged, expired or replayed index, or a broken key chain
    DRIFT_SHIFT = 7  # `bundle drift --fail-on shift`: a feature shifted (the report was read)
    INTERRUPTED = 130  # Ctrl-C, by shell convention 128 + SIGINT


EXIT_CODES: Mapping[type[BundleError], ExitCode] = MappingProxyType(
    {
        # The base class itself is raised for a file that cannot be read at all.
        BundleError: ExitCode.USAGE,
        KeyFileError: ExitCode.USAGE,
        InputError: ExitCode.USAGE,
        StoreError: ExitCode.USAGE,
        ServeError: ExitCode.USAGE,
        FleetError: ExitCode.USAGE,
        FormatError: ExitCode.REJECTED,
        SignatureError: ExitCode.REJECTED,
        ManifestError: ExitCode.REJECTED,
        IntegrityError: ExitCode.REJECTED,
        CompatibilityError: ExitCode.REJECTED,
        SelftestError: ExitCode.REJECTED,
        # Only the builder raises these (`bundle` has its own table); on a device they could
        # only mean a model it must refuse.
        RollbackError: ExitCode.ROLLBACK_REFUSED,
        ChannelError: ExitCode.CHANNEL_REJECTED,
        ChannelUnreachableError: ExitCode.CHANNEL_UNREACHABLE,
    }
)

# The channel's own messages name a file (index.json, keys/2.json), not that it was the channel.
_PREFIXES = {
    ExitCode.CHANNEL_UNREACHABLE: "channel unreachable: ",
    ExitCode.CHANNEL_REJECTED: "channel rejected: ",
}


@dataclass(frozen=True)
class Blame:
    """For one step of a command, the input at fault: every domain error raised there exits
    with ``code``, except those of the ``keep`` classes, which mean what ``EXIT_CODES`` says
    whatever the input."""

    code: ExitCode
    keep: tuple[type[BundleError], ...] = ()


# `serve --channel`: a URL the updater cannot use (an unsupported scheme, a file on another
# host) is a wrong argument. `update` exits 6 for the same ChannelError: the channel is what
# that command reads, and it refuses it.
ARGUMENTS = Blame(ExitCode.USAGE)

# A bundle being installed in the store, or kept there: whatever keeps it from running refuses
# it, as verification would. That includes a kept file deleted or changed on disk since (a plain
# BundleError or an IntegrityError) and an old store's keys/*.pub that cannot be read to check
# its signature (a KeyFileError). The store's own failures and its anti-rollback refusal keep
# their codes.
STORED_BUNDLE = Blame(ExitCode.REJECTED, keep=(StoreError, RollbackError))

# `update`: whatever is wrong with what the channel served refuses the channel, whatever its
# class (a replayed index raises a RollbackError, a forged one a SignatureError, a download
# unlike its listing an IntegrityError). An outage and the store's own failures keep their
# codes. A listed bundle that the store refuses raises nothing: update reports it and exits 3.
CHANNEL = Blame(ExitCode.CHANNEL_REJECTED, keep=(StoreError, ChannelUnreachableError))


def exit_code(error: BundleError, blamed: Blame | None = None) -> ExitCode:
    """``error``'s code: ``blamed``'s, unless it keeps that class, else its table entry."""
    if blamed is not None and not isinstance(error, blamed.keep):
        return blamed.code
    # The nearest class with an entry: a ChannelUnreachableError is not a refused channel.
    return next(EXIT_CODES[cls] for cls in type(error).__mro__ if cls in EXIT_CODES)


class Failure(Exception):
    """Ends a command: ``error: <message>`` on stderr, then exit ``code``."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code

    @classmethod
    def of(cls, error: BundleError, blamed: Blame | None = None) -> Failure:
        code = exit_code(error, blamed)
        return cls(code, _PREFIXES.get(code, "") + str(error))


def usage(message: str) -> Failure:
    return Failure(ExitCode.USAGE, message)


@contextmanager
def blame(blamed: Blame) -> Iterator[None]:
    """Domain errors raised inside exit as ``blamed`` says, not by their class alone."""
    try:
        yield
    except BundleError as e:
        raise Failure.of(e, blamed) from None
