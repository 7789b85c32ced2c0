"""Exceptions a user can cause, each carrying a sentence that the UI or CLI shows as it is.

Raise these from `core`; pages show `str(error)` with `st.error`, the CLI prints it and exits non-zero.
"""


class DigitLabError(Exception):
    """Base: the message is written for the person using the app."""


class ConfigError(DigitLabError, ValueError):
    """A training setting is invalid; the message names the field and why."""


class DataUnavailableError(DigitLabError):
    """A dataset's files are missing and could not be downloaded."""


class CheckpointError(DigitLabError):
    """A weights file is not ours, is corrupt, or does not fit the model."""


class RunNotFoundError(DigitLabError, KeyError):
    """No run with that id (or name) in the run store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
