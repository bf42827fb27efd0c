"""Errors that atlens reports to users as one clear message (the CLI prints them without a traceback)."""


class AtlensError(Exception):
    """Base class: anything the user can fix by changing their input."""


class ConfigError(AtlensError):
    """A run configuration is invalid (unknown key, wrong type, value out of range)."""


class DataError(AtlensError):
    """A dataset's files cannot be used as they are (unreadable image, mixed sizes, empty class)."""


class DatasetNotFoundError(DataError):
    """A dataset is not on disk; the message says how to get it."""


class CheckpointError(AtlensError):
    """A checkpoint is missing, unreadable, or does not match the model."""


class ModelContractError(AtlensError):
    """A model does not expose ``features(x)`` and a linear ``head``."""


class NonFiniteLossError(AtlensError):
    """Training produced a NaN or infinite loss."""
