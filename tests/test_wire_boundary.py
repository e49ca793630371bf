"""The wire format has one definition: client/ and server/ read and write records only through it.

No module in client/ or server/ indexes a record with a wire key (or imports the old key
table): every field goes through ``common.wire.records``' pack and unpack functions.
"""

import re
from pathlib import Path

from common.wire.records import (
    ARRAYS,
    CONFIG,
    METRICS,
    PRIVACY,
    REPLY,
    SECAGG,
    SECAGG_NEXT,
    STATISTICS,
)
from common.wire.settings import FIELD_KEYS

ROOT = Path(__file__).resolve().parents[1]
RECORD_NAMES = {ARRAYS, CONFIG, METRICS, PRIVACY, REPLY, SECAGG, SECAGG_NEXT, STATISTICS}
FIELD_NAMES = set(FIELD_KEYS.values()) | {
    "kind", "name", "index", "run-id", "server-round", "reason", "epsilon-patient",
    "epsilon-hospital", "budget-epsilon", "budget-delta", "num-examples", "train-loss",
    "encoding-clipped"}
# Subscripts and .get() calls with a string literal: record["x"], record.get("x", ...).
ACCESS = re.compile(r"""(?:\[\s*|\.get\(\s*)(["'])([a-z][a-z0-9.-]*)\1""")
WIRE_IMPORTS = re.compile(r"record_keys|from common\.wire\.records import .*\b(ARRAYS|CONFIG|"
                          r"METRICS|PRIVACY|REPLY|SECAGG|STATISTICS)\b")


def _modules():
    for folder in ("client", "server"):
        yield from sorted((ROOT / folder).glob("*.py"))


def test_no_client_or_server_module_indexes_a_record_with_a_wire_key():
    offenders = []
    for path in _modules():
        text = path.read_text()
        for number, line in enumerate(text.splitlines(), 1):
            if WIRE_IMPORTS.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
            for _, key in ACCESS.findall(line):
                if key in RECORD_NAMES or (key in FIELD_NAMES and "content" in line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_the_check_finds_an_offender():
    # The pattern the check relies on does match the code it forbids.
    assert ACCESS.findall('x = msg.content["metrics"]["num-examples"]') == [
        ('"', "metrics"), ('"', "num-examples")]
    assert WIRE_IMPORTS.search("from common import record_keys as keys")
