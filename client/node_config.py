"""A hospital's node config: who it is, where its data and ledger live, and its own budget.

The hospital's IT sets these when starting its SuperNode
(``flower-supernode --node-config "partition-id=0 num-partitions=3 data-path='...'"``; values
are TOML: strings in quotes). Nothing the server sends can change them.

================  =======================  ===============================================
key               value                    meaning
================  =======================  ===============================================
partition-id      int, 0 <= id < N         this hospital's index in the federation (required)
num-partitions    int >= 1                 N, the federation's hospitals; must equal the
                                           run's ``hospitals``
hospital-name     text (letters, digits,   the hospital's name in its ledger and logs
                  ``.``, ``_``, ``-``)     (default: the run's name for it, ``hospital-<id>``)
data-path         path to a file           its CSV file (task ``csv``: required)
schema-path       path to a file           its copy of the consortium's schema (task ``csv``:
                                           required)
ledger-path       path to a file           its privacy ledger, made by ``fedcare budget init``
                                           (missing: the hospital refuses to train); default
                                           ``$FEDCARE_HOME/ledgers/<name>.json``
                                           (``~/.fedcare``; made on first use only for a
                                           ``flwr run .`` simulated node); the
                                           preprocessing statistics go next to it
ledger-head-path  path to a file           the ledger's hash-chain head, apart from the
                                           ledger's directory (another volume is best);
                                           default: the one the ledger records, else
                                           ``$FEDCARE_HOME/heads/<name>.head``. Deleting or
                                           restoring the ledger alone is then refused
budget-epsilon    number > 0               lowers its ledger's epsilon (a simulated node's
                                           ledger made on first use starts with it, else 1);
                                           not set: the ledger keeps its own
budget-delta      number in (0, 1)         likewise its delta (else 1e-5)
dp-mode           patient, hospital, none  the DP level it applies; it declines runs asking
                                           another (default ``patient``)
accountant        rdp, prv                 its ledger's Opacus accountant (default ``rdp``)
colluding-        int >= 0                 distributed noise: the most hospitals it assumes
hospitals                                  collude with the server (c; needs h <= t - c)
roster-path       path to a file           secure aggregation: its copy of the consortium
                                           roster (``fedcare roster build``)
roster-sha256     hex digest               the roster's SHA-256, checked by phone; a roster
                                           with another digest is refused
signing-key-path  path to a file (0600)    its roster signing key (``fedcare roster key``)
app-sha256        hex digest               the fedcare code it accepts (checked by
                                           ``client.app_pinning``, not here)
worker-socket     path to a Unix socket    its worker (``fedcare hospital-worker --socket``):
                                           the ClientApp relays every message there
                                           (``client.entry``); unset: handled in Flower's
                                           per-message process
worker-authkey-   path to a file (0600)    the worker's key file (default: the socket's path
file                                       plus ``.authkey``)
================  =======================  ===============================================

Any other key is refused, so that a misspelt key (``budget-epsilom``) cannot silently leave a
setting at the run's default.

No privacy setting is ever taken from the run config (the server's): where the node config is
silent, fedcare's built-in strict defaults apply (``client.privacy``).
"""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.config import ACCOUNTANTS, DP_MODES

NODE_CONFIG_KEYS = ("partition-id", "num-partitions", "hospital-name", "data-path",
                    "schema-path", "ledger-path", "ledger-head-path", "budget-epsilon",
                    "budget-delta", "dp-mode", "accountant", "colluding-hospitals",
                    "roster-path", "roster-sha256", "signing-key-path", "app-sha256",
                    "worker-socket", "worker-authkey-file")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """A validated node config; None where the key is absent (see the module docstring)."""

    partition_id: int
    num_partitions: int | None = None
    hospital_name: str | None = None
    data_path: Path | None = None
    schema_path: Path | None = None
    ledger_path: Path | None = None
    budget_epsilon: float | None = None
    budget_delta: float | None = None
    dp_mode: str | None = None
    accountant: str | None = None
    ledger_head_path: Path | None = None
    colluding_hospitals: int | None = None
    roster_path: Path | None = None
    roster_sha256: str | None = None
    signing_key_path: Path | None = None

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> "NodeConfig":
        """Validate Flower's node config.

        Raises
        ------
        ValueError
            Naming the key, the value and the rule: an unknown key, a value of the wrong
            type or out of range, a data or schema file that does not exist.
        """
        unknown = sorted(set(node_config) - set(NODE_CONFIG_KEYS))
        if unknown:
            raise ValueError(f"node config has unknown keys {unknown}; known keys: "
                             f"{', '.join(NODE_CONFIG_KEYS)}")
        partition_id = _integer(node_config, "partition-id", minimum=0)
        if partition_id is None:
            raise ValueError("node config has no 'partition-id': this node does not know "
                             "which hospital it is")
        num_partitions = _integer(node_config, "num-partitions", minimum=1)
        if num_partitions is not None and partition_id >= num_partitions:
            raise ValueError(f"node config partition-id must be < num-partitions="
                             f"{num_partitions}, got {partition_id}")
        name = node_config.get("hospital-name")
        if name is not None and (not isinstance(name, str) or not _NAME.fullmatch(name)):
            raise ValueError("node config hospital-name must be letters, digits, '.', '_' or "
                             f"'-' (it names the ledger file), got {name!r}")
        epsilon = _positive_number(node_config, "budget-epsilon")
        delta = _positive_number(node_config, "budget-delta")
        if delta is not None and not delta < 1:
            raise ValueError(f"node config budget-delta must be in (0, 1), got {delta!r}")
        mode = node_config.get("dp-mode")
        if mode is not None and mode not in DP_MODES:
            raise ValueError(f"node config dp-mode must be one of {DP_MODES}, got {mode!r}")
        accountant = node_config.get("accountant")
        if accountant is not None and accountant not in ACCOUNTANTS:
            raise ValueError(f"node config accountant must be one of {ACCOUNTANTS}, got "
                             f"{accountant!r}")
        ledger = _path(node_config, "ledger-path")
        if ledger is not None and ledger.is_dir():
            raise ValueError(f"node config ledger-path {ledger} is a directory; give the "
                             "ledger's file name, e.g. .../ledger.json")
        return cls(partition_id=partition_id, num_partitions=num_partitions, hospital_name=name,
                   data_path=_existing_file(node_config, "data-path"),
                   schema_path=_existing_file(node_config, "schema-path"), ledger_path=ledger,
                   budget_epsilon=epsilon, budget_delta=delta, dp_mode=mode,
                   accountant=accountant,
                   ledger_head_path=_path(node_config, "ledger-head-path"),
                   colluding_hospitals=_integer(node_config, "colluding-hospitals", minimum=0),
                   roster_path=_existing_file(node_config, "roster-path"),
                   roster_sha256=_sha256(node_config, "roster-sha256"),
                   signing_key_path=_existing_file(node_config, "signing-key-path"))

    def csv_files(self) -> tuple[Path, Path]:
        """Return the data and schema files task csv needs.

        Raises
        ------
        ValueError
            If data-path or schema-path is not set.
        """
        absent = [key for key, value in (("data-path", self.data_path),
                                         ("schema-path", self.schema_path)) if value is None]
        if absent:
            raise ValueError(f"task 'csv' needs node config {' and '.join(absent)}: the "
                             "hospital's CSV file and its copy of the consortium's schema")
        return self.data_path, self.schema_path  # type: ignore[return-value]


def _integer(node_config: Mapping[str, Any], key: str, *, minimum: int) -> int | None:
    value = node_config.get(key)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)  # a value given without TOML typing
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"node config {key} must be an integer >= {minimum}, got {value!r}")
    return value


def _positive_number(node_config: Mapping[str, Any], key: str) -> float | None:
    value = node_config.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"node config {key} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 \
            or value == float("inf"):
        raise ValueError(f"node config {key} must be a finite number > 0, got {value!r}")
    return float(value)


def _path(node_config: Mapping[str, Any], key: str) -> Path | None:
    value = node_config.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"node config {key} must be a file path (a quoted TOML string), "
                         f"got {value!r}")
    return Path(os.path.expanduser(value))


def _existing_file(node_config: Mapping[str, Any], key: str) -> Path | None:
    path = _path(node_config, key)
    if path is not None and not path.is_file():
        raise ValueError(f"node config {key}: {path} "
                         f"{'is not a file' if path.exists() else 'does not exist'}")
    return path


def _sha256(node_config: Mapping[str, Any], key: str) -> str | None:
    value = node_config.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise ValueError(f"node config {key} must be a 64-hex-digit SHA-256, got {value!r}")
    return value.lower()
