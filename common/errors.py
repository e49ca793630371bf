"""The project's error types: each names what failed so an admin can act on it."""


class FedcareError(Exception):
    """Base class of fedcare's own errors."""


class DataValidationError(FedcareError, ValueError):
    """A hospital's data file is unusable; the message names file, row and column."""


class PrivacyBudgetExceededError(FedcareError):
    """Taking part in the next round would push a hospital past its own privacy budget."""


class LedgerError(FedcareError):
    """A privacy ledger is unreadable, tampered with, or inconsistent."""


class SecAggProtocolError(FedcareError):
    """A secure-aggregation stage failed; the round must abort without unmasking."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"secure aggregation, stage {stage!r}: {reason}")
        self.stage = stage
        self.reason = reason


class UpdateRejectedError(FedcareError):
    """A hospital's reply failed validation and is not aggregated."""


class RunConfigError(FedcareError, ValueError):
    """A run-config value is of the wrong type, out of range or does not fit the others.

    ``key`` is the run-config key at fault; the message starts with it (``"<key> must be
    ..."``), so a command line can say it in terms of the flag the user typed.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
