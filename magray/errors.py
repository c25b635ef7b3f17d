"""One error tree for magray. Each class carries the exit code the CLI uses for it."""

from __future__ import annotations


class MagrayError(Exception):
    """An operational failure the user can act on (exit 1)."""

    exit_code = 1

    def __init__(self, message: str = "", *, param: str | None = None):
        super().__init__(message)
        # The library parameter the message names, spelled as in the message ("top_k",
        # "replace=True"): a Python caller reads it, the CLI puts its own flag in its place.
        self.param = param


class InputError(MagrayError):
    """Bad usage or bad input; nothing was written (exit 2)."""

    exit_code = 2


class ConfigError(InputError):
    """The configuration file, an environment variable or a flag holds a bad setting (exit 2)."""


class ModelError(MagrayError):
    """The embedding model cannot be resolved, loaded or run (exit 1)."""


class ModelMismatchError(MagrayError):
    """The data was embedded with another model than the configured one (exit 1)."""


class BusyError(MagrayError):
    """Another magray process held the database or an index lock for too long (exit 1)."""


class IntegrityError(MagrayError):
    """Stored data failed a check and could not be repaired (exit 3)."""

    exit_code = 3


class NotFoundError(MagrayError):
    """A record, archive or file that was named does not exist (exit 1)."""

    @classmethod
    def unless_all(cls, wanted, found, outcome: str, where: str = "") -> None:
        """Raise for the ids of ``wanted`` not in ``found``: an all-or-nothing change of
        several records names every missing one and says ``nothing was <outcome>``."""
        if missing := [i for i in wanted if i not in found]:
            raise cls(f"no record with id {', '.join(map(str, missing))}{where}; "
                      f"nothing was {outcome}")


class StoreInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a store part-way; ``stored`` holds the records committed before it
    (exit 130). A KeyboardInterrupt still, so callers that stop on Ctrl-C still stop."""

    exit_code = 130

    def __init__(self, stored: list):
        super().__init__(f"interrupted after storing {len(stored)} record(s)")
        self.stored = stored
