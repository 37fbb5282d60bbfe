"""Exceptions that name the problem and the fix."""


class MTLError(Exception):
    """Base class for every error raised by mtl_helpers."""


class ModelLoadError(MTLError, OSError):
    """An encoder could not be loaded from the given id or path."""


class UnsupportedEncoderError(MTLError, ValueError):
    """The encoder's layer structure could not be discovered."""


class UnknownGroupError(MTLError, KeyError):
    """A layer-group name that the model does not have."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


class DataError(MTLError, ValueError):
    """A dataset is missing, malformed, or does not fit the request."""


class UnknownTaskError(DataError, KeyError):
    """A task or dataset name that the registry does not know."""

    def __str__(self) -> str:
        return str(self.args[0])


class OptimizerAuditError(MTLError, AssertionError):
    """The optimizer does not hold exactly the trainable parameters."""


class FrozenParameterChanged(MTLError, AssertionError):
    """A parameter that was frozen during training changed."""


class TrainingDiverged(MTLError, FloatingPointError):
    """The loss or the gradients became NaN or infinite."""
