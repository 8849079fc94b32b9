"""Exceptions, warnings and exit codes of pimc-ray: one base class, one subclass per problem.

Every message names the bad value (or the stage that failed) and says what to do about it, so that a job can
print ``str(err)`` as its one line of output. Each error class carries the exit code a job ends with:

==========================  ====  =========================================================================
code                        when
==========================  ====  =========================================================================
:data:`EXIT_OK`             0     success, or nothing left to do
(Python's own)              1     an unexpected crash: a bug, reported with its traceback
:data:`EXIT_BAD_INPUT`      2     bad input or data the user can fix; nothing was written
:data:`EXIT_TILES_FAILED`   3     some tiles failed and are listed; the others were written
:data:`EXIT_INTERNAL`       4     a stage failed for a reason that is not the input (the message names it)
==========================  ====  =========================================================================
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_CODES_HELP",
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_TILES_FAILED",
    "AllCloudError",
    "AssetReadError",
    "AssetReadWarning",
    "CatalogUnreachableError",
    "CheckpointError",
    "CheckpointMismatchError",
    "DatasetError",
    "InternalError",
    "InvalidAOIError",
    "InvalidConfigError",
    "InvalidDateRangeError",
    "LabelError",
    "MixedCRSError",
    "NoItemsFoundError",
    "OutputExistsError",
    "PimcError",
    "PimcWarning",
    "StorageError",
    "TilesFailedError",
    "UnknownCatalogError",
]

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_TILES_FAILED = 3
EXIT_INTERNAL = 4

#: The exit codes as ``pimc ... --help`` and the README list them.
EXIT_CODES_HELP = (
    "exit codes: 0 success (or nothing to do); 1 unexpected crash (a bug: traceback); 2 bad input (one line on "
    "stderr naming the fix, nothing written); 3 some tiles failed (listed; the others are written); 4 internal "
    "error (a stage failed for a reason that is not the input; the line names it)"
)


class PimcError(Exception):
    """Base class of every error pimc-ray raises on purpose; by default a problem with the input."""

    exit_code: ClassVar[int] = EXIT_BAD_INPUT


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


class LabelError(PimcError, ValueError):
    """Labels that cannot be used: unreadable, without the class property, or with fewer than two classes."""


class CheckpointError(PimcError):
    """A model checkpoint is missing, corrupt, or does not match the model it is loaded into."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint holds another model than the one asked for."""


class DatasetError(PimcError, ValueError):
    """An evaluation dataset (PASTIS, EuroSAT) whose folder does not have the layout it is distributed in: a
    missing file or folder, another band count or shape; the message names the expected layout."""


class OutputExistsError(PimcError):
    """The output location already holds results that a run would overwrite."""


class StorageError(PimcError):
    """A location cannot be used (bad URI, unreachable endpoint, missing credentials)."""


class TilesFailedError(PimcError):
    """Some tiles failed; the others were written. Rerunning the same command redoes only the failed ones."""

    exit_code: ClassVar[int] = EXIT_TILES_FAILED


class InternalError(PimcError):
    """A stage failed for a reason that is not the input (GDAL wrote an invalid COG, an export broke...)."""

    exit_code: ClassVar[int] = EXIT_INTERNAL


class PimcWarning(UserWarning):
    """Base class of warnings about recoverable data problems (they become nodata, never zeros)."""


class AssetReadWarning(PimcWarning):
    """Assets could not be read and their pixels were set to nodata; ``count`` says how many reads."""

    def __init__(self, message: str, count: int = 1) -> None:
        super().__init__(message)
        self.count = count
