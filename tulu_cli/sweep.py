"""A failed job of a sweep (-m): Hydra records it and runs the remaining jobs, then reports it in one line.

A single run ends with the stage's exit code instead (`SystemExit`), which would stop a sweep at its
first failure.
"""

from hydra.errors import CompactHydraException


class SweepPointFailed(CompactHydraException):
    """One job of a sweep failed; the message says which run directory and why."""
