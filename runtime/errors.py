"""One domain error tree: callers catch ``BundleError`` and print its one-line message."""


class BundleError(Exception):
    """Base of every error edgebundle raises on purpose."""


class FormatError(BundleError):
    """The bundle container is malformed: bad tar, unexpected or unsafe members, size caps."""


class SignatureError(BundleError):
    """No valid signature by a trusted key over the manifest bytes."""


class ManifestError(BundleError):
    """The (signed) manifest does not parse or does not validate.

    ``context`` is the dotted path of the offending field, e.g. ``files.model.onnx.sha256``.
    """

    def __init__(self, message: str, context: str = "") -> None:
        self.detail = message  # the message without its path, to re-raise under another path
        self.context = context
        super().__init__(f"{context}: {message}" if context else message)


class IntegrityError(BundleError):
    """A payload file does not match the size or sha256 its manifest lists."""


class KeyFileError(BundleError):
    """A signing or public key cannot be read or is of the wrong kind."""


class CompatibilityError(BundleError):
    """The bundle needs a newer runtime, onnxruntime or opset than this device has."""


class RollbackError(BundleError):
    """A version lower than (or equal to, with other content) one already seen."""


class InputError(BundleError):
    """A row to score is malformed: wrong feature count, a string where a number belongs..."""


class ChannelError(BundleError):
    """An OTA channel is refused: malformed, expired, replayed, a broken key chain, or a
    download that is not what the signed index lists."""


class ChannelUnreachableError(ChannelError):
    """The channel could not be read at all (refused, DNS, timeout, 404, 5xx): an outage to
    retry later, never evidence of an attack."""


class StoreError(BundleError):
    """The model store cannot be opened, read or written, or refuses an operation on itself."""


class ServeError(BundleError):
    """``serve`` cannot start as configured (an unreadable or unsafe token file...)."""


class SelftestError(BundleError):
    """A verified bundle failed its install-time selftest in the real scorer (or cannot load)."""


class FleetError(BundleError):
    """The fleet's MQTT settings are wrong (a bad broker URL, a missing extra, an unreadable
    certificate or password file), or a fleet document does not parse."""
