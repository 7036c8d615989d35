"""Every error the jobs catch and turn into an exit status, in one place.

The library raises these; `jobs/*.py` catch them and exit (2 for an unusable input or
location, 3 for a held lock, 1 for an incomplete run). Each message says what and where.
"""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset source that cannot be turned into a manifest; the message says why."""


class RunError(Exception):
    """The run cannot start at its output location, or cannot go on; the message names the URI and why."""


class RunExists(RunError):
    """The run id is taken and --overwrite was not given."""


class CheckpointStoreError(ValueError):
    """A model version that cannot be recorded in, or found in, the checkpoint store."""


class LockHeld(RuntimeError):
    """Another run holds the results table's lock; the message says who and since when."""


class IncompleteRun(FileNotFoundError):
    """The run directory has no summary.json: the run did not finish."""



class SettingsError(ValueError):
    """A setting the job cannot take: where it came from, the key, and what is allowed (exit 2)."""
