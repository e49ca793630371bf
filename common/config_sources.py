"""Where a run's settings come from: the defaults, a TOML file of run-config keys, the flags.

``fedcare simulate --config FILE`` reads the very file ``flwr run . --run-config FILE``
accepts: run-config keys at top level (``num-server-rounds = 5``), as quoted dotted keys
(``"dp.epsilon" = 2.0``) or in tables (``[dp]`` then ``epsilon = 2.0``), flattened with dots
as Flower's ``flatten_dict`` does. Flags override the file, the file overrides the defaults,
and each setting remembers its source, so ``config.json`` can say where it came from and an
error can name what the user wrote: the flag, or the file and key.

Light on purpose (no task module, no Flower): every check here runs before anything heavy.
"""

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import DEFAULTS
from common.errors import RunConfigError

DEFAULT = "default"
FILE_PREFIX = "file "
FLAG_PREFIX = "flag "
_SCALARS = (bool, int, float, str)  # what a Flower run-config value may be


class ConfigFileError(ValueError):
    """A ``--config`` file is unreadable, not TOML, or holds a key it may not (file named)."""


def read_config_file(path: Path, *, refused: Mapping[str, str] | None = None,
                     flag_keys: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return the run-config keys of a TOML file, flattened (``[dp] epsilon`` -> ``dp.epsilon``).

    Parameters
    ----------
    refused : Mapping[str, str], optional
        Known keys the caller sets itself, each with the reason (said in the error).
    flag_keys : Mapping[str, str], optional
        A flag's name (``rounds``) -> its run-config key: a file that uses the flag's name is
        told the key.

    Raises
    ------
    ConfigFileError
        Naming the file (and the key): unreadable, malformed TOML, a value that is no string,
        number or boolean, an unknown key (with the closest known one) or a refused key.
    """
    import tomllib  # only with --config: no cost to a command line without one

    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigFileError(f"--config {path}: cannot read it "
                              f"({error.strerror or error})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigFileError(f"--config {path}: not a valid TOML file ({error})") from None
    values = _flatten(document, path)
    for key in values:
        if key not in DEFAULTS:
            if flag_keys and key in flag_keys:
                raise ConfigFileError(f"--config {path}: unknown run-config key {key!r}; the "
                                      f"file takes run-config keys: {flag_keys[key]!r} (what "
                                      f"--{key} sets)")
            close = difflib.get_close_matches(key, DEFAULTS, n=1)
            hint = f"; did you mean {close[0]}?" if close else (
                "; the keys are those of pyproject.toml's [tool.flwr.app.config]")
            raise ConfigFileError(f"--config {path}: unknown run-config key {key!r}{hint}")
        if refused and key in refused:
            raise ConfigFileError(f"--config {path}: key {key!r} is not taken from a file "
                                  f"here: {refused[key]}")
    return values


def _flatten(table: Mapping[str, Any], path: Path, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, path, f"{key}."))
        elif isinstance(value, _SCALARS):
            flat[key] = value
        else:
            raise ConfigFileError(f"--config {path}: {key} must be a string, a number or true/"
                                  f"false (as a Flower run config), got {value!r}")
    return flat


@dataclass(slots=True)
class SettingSources:
    """Run-config values gathered from a file and flags, each with where it came from.

    ``flags`` maps a run-config key to the flag that sets it (``"num-server-rounds"`` ->
    ``"--rounds"``): errors about a key name that flag unless the file gave the value.
    """

    flags: Mapping[str, str]
    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)

    def add_file(self, path: Path, values: Mapping[str, Any]) -> None:
        """Take every key of a ``--config`` file (a later flag overrides it)."""
        for key, value in values.items():
            self.values[key] = value
            self.origins[key] = f"{FILE_PREFIX}{path}"

    def add_flag(self, key: str, value: Any) -> None:
        """Take a value the user typed as the key's flag."""
        self.values[key] = value
        self.origins[key] = f"{FLAG_PREFIX}{self.flags[key]}"

    def add_default(self, key: str, value: Any) -> None:
        """Take a value the command chose itself (e.g. the task's number of hospitals)."""
        if key not in self.values:
            self.values[key] = value

    def given(self, key: str) -> bool:
        """Whether the file or a flag set `key`."""
        return key in self.origins

    def where(self, key: str) -> str:
        """How to name `key` to the user: its flag, or ``FILE: key`` if the file set it."""
        origin = self.origins.get(key, "")
        if origin.startswith(FILE_PREFIX):
            return f"{origin.removeprefix(FILE_PREFIX)}: {key}"
        return self.flags.get(key, key)

    def describe(self, error: RunConfigError) -> str:
        """The error in the user's terms: ``--rounds must be >= 1, got 0``."""
        message, where = str(error), self.where(error.key)
        for separator in (" ", ": "):
            if message.startswith(error.key + separator):
                return where + message[len(error.key):]
        return f"{where}: {message}"

    def record(self, keys: list[str]) -> dict[str, str]:
        """Each of `keys` -> ``default``, ``file PATH`` or ``flag --NAME`` (for config.json)."""
        return {key: self.origins.get(key, DEFAULT) for key in keys}
