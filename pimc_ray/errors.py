"""Exceptions and warnings of pimc-ray: one base class, one subclass per problem a user can fix.

Every message names the bad value and says what to do about it, so that a job can print ``str(err)`` as its one
line of output and exit non-zero.
"""

from __future__ import annotations


class PimcError(Exception):
    """Base class of every error pimc-ray raises on purpose."""


class InvalidAOIError(PimcError, ValueError):
    """The area of interest is malformed, empty, or not a polygon."""


class InvalidConfigError(PimcError, ValueError):
    """A setting is out of range or inconsistent (tile size, window size, parallelism...)."""


class InvalidDateRangeError(PimcError, ValueError):
    """The start and end dates are unparsable or reversed."""


class NoItemsFoundError(PimcError):
    """A catalog search returned no items for the AOI, dates and filters."""


class CatalogUnreachableError(PimcError):
    """The STAC API could not be reached or answered with an error."""


class UnknownCatalogError(PimcError, ValueError):
    """Items do not follow any catalog convention pimc-ray knows."""


class MixedCRSError(PimcError):
    """Items that must share one grid come in more than one CRS."""


class AllCloudError(PimcError):
    """No valid (cloud-free) observation is left for the requested pixels."""


class AssetReadError(PimcError):
    """An asset could not be read (missing, corrupt, or unreachable)."""


class CheckpointError(PimcError):
    """A model checkpoint is missing, corrupt, or does not match the model it is loaded into."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint holds another model than the one asked for."""


class OutputExistsError(PimcError):
    """The output location already holds results that a run would overwrite."""


class PimcWarning(UserWarning):
    """Base class of warnings about recoverable data problems (they become nodata, never zeros)."""


class AssetReadWarning(PimcWarning):
    """An asset could not be read and its pixels were set to nodata."""


class FewObservationsWarning(PimcWarning):
    """Some pixels have too few valid observations and were set to nodata."""
