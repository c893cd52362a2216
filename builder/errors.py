"""The workstation's errors: ``BundleError`` subclasses (one tree with the runtime's, so callers
catch one base), defined here because only the builder raises them."""

from edgebundle.runtime.errors import BundleError


class ConversionError(BundleError):
    """The model cannot be converted faithfully (unsupported objective, booster, split type...)."""


class ParityError(BundleError):
    """The converted model misses its error budget against XGBoost's own predictions."""


class MeasurementError(BundleError):
    """A measurement the build needs to choose a precision could not be taken."""
