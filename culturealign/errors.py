"""User-facing errors. Each message is one line that says what is wrong and what to fix.

Plain exceptions: the application layer (`culturealign.app`) prints them as one line without a traceback
(HYDRA_FULL_ERROR=1 shows it) and exits non-zero.
"""


class CultureAlignError(Exception):
    """Base class for errors caused by input the user can fix."""


class ConfigError(CultureAlignError):
    """A config value is missing, out of range or inconsistent."""


class DatasetError(CultureAlignError):
    """The dataset file cannot be read or does not hold what the run needs."""


class CacheError(CultureAlignError):
    """The response cache stopped answering mid-job (a database server that went away, a full disk)."""


class ModelError(CultureAlignError):
    """A model request failed for good (after retries); names the endpoint and the cause."""


class TrackingError(CultureAlignError):
    """MLflow cannot be reached or written."""


class NothingMeasured(CultureAlignError):
    """Every answer of every question was unclassifiable: no similarity exists (never a NaN result)."""

    exit_code = 3


class ReportError(CultureAlignError):
    """Tracked runs cannot be found or read, or an audit file is incomplete."""
