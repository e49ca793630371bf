"""Typed readers for wire fields: the one place a received value is checked (no Flower here).

Every field a hospital or the server receives passes one of these readers, which check the
type, the range and finiteness and raise ``WireFormatError`` naming the field. Booleans are
never accepted as numbers (``True`` is an ``int`` in Python), integers are accepted where a
float is meant (TOML and Flower turn ``1.0`` into ``1``), and numpy scalars are unwrapped.
"""

import math
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import TypeVar

from common.errors import FedcareError

E = TypeVar("E", bound=StrEnum)

MAX_TEXT = 1_000  # characters: a reason, a name or an id never needs more
UNBOUNDED = "unbounded"  # how +infinity travels (an epsilon with no finite guarantee)


class WireFormatError(FedcareError, ValueError):
    """A received record is malformed: the message names the field and what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def _raw(fields: Mapping[str, object], key: str) -> object:
    if key not in fields:
        raise WireFormatError(key, "missing")
    value = fields[key]
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and getattr(value, "shape", None) == ():
        value = item()
    return value


def read_int(fields: Mapping[str, object], key: str, *, minimum: int,
             maximum: int = 2**62) -> int:
    """Return an integer field in [minimum, maximum]."""
    received = value = _raw(fields, key)
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer() and math.isfinite(value):
            value = int(value)
        else:
            raise WireFormatError(key, f"must be an integer, got {value!r}")
    if not minimum <= value <= maximum:  # the value as received (1e300, not its 301 digits)
        raise WireFormatError(key, f"must be in [{minimum}, {maximum}], got {received!r}")
    return value


def read_float(fields: Mapping[str, object], key: str, *, minimum: float,
               maximum: float = 1e300, strict_minimum: bool = False,
               allow_unbounded: bool = False) -> float:
    """Return a finite number in [minimum, maximum] (or (minimum, maximum] if strict).

    With `allow_unbounded` the text ``"unbounded"`` reads as +infinity, the one way an
    infinite value travels; a float infinity or NaN is always refused.
    """
    value = _raw(fields, key)
    if allow_unbounded and value == UNBOUNDED:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WireFormatError(key, f"must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise WireFormatError(key, f"must be finite, got {value!r}")
    below = number <= minimum if strict_minimum else number < minimum
    if below or number > maximum:
        low = "(" if strict_minimum else "["
        raise WireFormatError(key, f"must be in {low}{minimum:g}, {maximum:g}], got {value!r}")
    return number


def write_float(value: float) -> float | str:
    """Encode a number for the wire: +infinity becomes ``"unbounded"``."""
    return UNBOUNDED if value == math.inf else float(value)


def read_bool(fields: Mapping[str, object], key: str) -> bool:
    """Return a boolean field (exactly True or False)."""
    value = _raw(fields, key)
    if not isinstance(value, bool):
        raise WireFormatError(key, f"must be true or false, got {value!r}")
    return value


def read_text(fields: Mapping[str, object], key: str, *, pattern: str | None = None,
              max_length: int = MAX_TEXT, allow_empty: bool = False) -> str:
    """Return a text field of at most `max_length` characters, matching `pattern` if given."""
    value = _raw(fields, key)
    if not isinstance(value, str):
        raise WireFormatError(key, f"must be text, got {type(value).__name__}")
    if len(value) > max_length:
        raise WireFormatError(key, f"is {len(value)} characters long, at most {max_length}")
    if not value and not allow_empty:
        raise WireFormatError(key, "must not be empty")
    if value and pattern is not None and not re.fullmatch(pattern, value):
        raise WireFormatError(key, f"must match {pattern}, got {value!r}")
    return value


def read_enum(fields: Mapping[str, object], key: str, kind: type[E]) -> E:
    """Return an enum member from its text value."""
    value = _raw(fields, key)
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    allowed = ", ".join(member.value for member in kind)
    raise WireFormatError(key, f"must be one of {allowed}, got {value!r}")


def read_optional(fields: Mapping[str, object], key: str) -> bool:
    """Whether an optional field is present (present fields must then be read)."""
    return key in fields
