"""Exceptions a user can cause, each carrying a sentence that the UI or CLI shows as it is.

Raise these from `core`; pages show `str(error)` with `st.error`, the CLI prints it and exits non-zero.
"""


class DigitLabError(Exception):
    """Base: the message is written for the person using the app."""


class ConfigError(DigitLabError, ValueError):
    """A training setting is invalid; the message names the setting as a person sees it, and why.

    `field` is the TrainConfig field (the CLI adds its flag, the form marks the widget).
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DataUnavailableError(DigitLabError):
    """A dataset's files are missing and could not be downloaded."""


class CheckpointError(DigitLabError):
    """A weights file is not ours, is corrupt, or does not fit the model."""


class RunNotFoundError(DigitLabError, KeyError):
    """No run with that id (or name) in the run store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ExplanationError(DigitLabError, ValueError):
    """An explanation was asked for something it cannot do; the message says what applies instead."""


class EmptyDrawingError(DigitLabError):
    """No ink to read: an empty canvas or a picture of a single flat colour."""


class ImageFormatError(DigitLabError, ValueError):
    """The input is not an image we can read: wrong type, shape or pixel values."""


class DrawingSetError(DigitLabError, ValueError):
    """A drawing set or a drawing cannot be found, named, saved or imported as asked; the message says why."""
