"""Errors that atlens reports to users as one clear message (the CLI prints them without a traceback)."""

# sysexits.h's EX_TEMPFAIL, "a temporary failure; the user is invited to retry": the exit status of a run stopped by
# a signal with a checkpoint, which the same command continues
EXIT_RESUMABLE = 75


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


class TrainingInterrupted(Exception):
    """Training stopped after a signal at a step boundary (every rank raises it), with a checkpoint to resume from:
    the process exits with ``EXIT_RESUMABLE``. ``position``: steps done of epoch
    ``epoch + 1`` (0: at an epoch boundary); ``stop``: the ``StopSignals`` that caught it; ``run``: the run's folder."""

    def __init__(self, signal_name: str, epoch: int, position: int, batches: int, stop: object) -> None:
        self.signal_name, self.epoch, self.position, self.batches, self.stop = (signal_name, epoch, position,
                                                                               batches, stop)
        self.run: object = None
        self.runtime: object = None  # the command's RuntimeConfig (its timeout_signal and max_timeouts)
        where = f"after step {position}/{batches} of epoch {epoch + 1}" if position else f"after epoch {epoch}"
        super().__init__(f"stopped by {signal_name} {where}")
