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
