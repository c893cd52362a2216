"""The device kit's error: a one-line message, in the builder's one error tree."""

from edgebundle.runtime.errors import BundleError


class KitError(BundleError):
    """A kit cannot be made: an unsupported platform or Python, a download that failed..."""
