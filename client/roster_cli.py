"""Consortium roster commands of the ``fedcare`` CLI (``fedcare roster key|build|show``).

Each hospital makes its own Ed25519 signing key pair (``roster key``); only the public key
file travels to whoever builds the roster (``roster build``), and every hospital checks the
roster's SHA-256 over the phone (``roster show --sha256``) before pinning it in its node config
as ``roster-sha256``. The protocol itself is in ``common/secagg/roster.py``.

File formats
------------
private key (``--out PATH``)
    PKCS#8 PEM, unencrypted, written 0600; never overwritten.
public key (``PATH.pub``)
    One line: the raw 32-byte Ed25519 public key as 64 lowercase hex digits (the roster's own
    ``signing_key`` encoding), then a newline. Its fingerprint is the SHA-256 of the 32 raw
    bytes, in hex.
roster (``roster build --out``)
    The roster's canonical JSON (:meth:`common.secagg.roster.Roster.to_bytes`), so the file's
    ``sha256sum`` equals the roster digest the node config pins.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from common.key_files import PRIVATE_MODE, PUBLIC_MODE, PendingFile, write_file, write_files

if TYPE_CHECKING:  # common.secagg.roster imports cryptography: loaded by the commands that use it
    from common.secagg.roster import Roster

roster_app = typer.Typer(
    help="The consortium roster: hospitals' signing keys (key), the roster (build), its "
         "digest for the phone check (show).",
    no_args_is_help=True,
    add_completion=False,
)

PUBLIC_SUFFIX = ".pub"
_HEX64 = re.compile(r"[0-9a-f]{64}")
# Roster validation names its fields; the commands name their flags.
_FLAG_OF_FIELD = {"'colluders'": "--colluding", "'min_threshold'": "--min-threshold",
                  "'honest'": "--honest"}


@dataclass(frozen=True, slots=True)
class SigningKeyFiles:
    """A hospital's signing key files and the public key's fingerprint."""

    private_key: Path
    public_key: Path
    fingerprint: str


def public_key_path(private_key: Path) -> Path:
    """Where the public key of the private key file ``private_key`` goes: ``PATH.pub``."""
    return private_key.with_name(private_key.name + PUBLIC_SUFFIX)


def fingerprint(public_key: bytes) -> str:
    """SHA-256 (hex) of a raw 32-byte Ed25519 public key: what hospitals read out by phone."""
    return hashlib.sha256(public_key).hexdigest()


def create_signing_key(path: Path) -> SigningKeyFiles:
    """Make an Ed25519 signing key pair: ``path`` (PEM, 0600) and ``path.pub`` (hex line).

    The parent directory is created (0700) if missing.

    Raises
    ------
    FileExistsError
        If either file exists (nothing is written; the message names the file).
    """
    path = Path(path)
    pub = public_key_path(path)
    for existing in (path, pub):
        if existing.exists() or existing.is_symlink():
            raise FileExistsError(f"{existing} already exists: a signing key is never "
                                  "overwritten (choose another --out, or remove it yourself)")
    from common.secagg.roster import make_signing_key

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pair = make_signing_key()
    write_files([PendingFile(path, pair.private_pem, PRIVATE_MODE),
                 PendingFile(pub, pair.public_key.hex().encode("ascii") + b"\n", PUBLIC_MODE)],
                force=False)
    return SigningKeyFiles(private_key=path, public_key=pub,
                           fingerprint=fingerprint(pair.public_key))


def read_public_key(path: Path) -> bytes:
    """Read a ``.pub`` file written by ``roster key``: the raw 32-byte public key.

    Raises
    ------
    ValueError
        If the file cannot be read or is not 64 hex digits (the message names the file).
    """
    try:
        text = Path(path).read_bytes().decode("ascii").strip().lower()
    except OSError as error:
        raise ValueError(f"public key file {path} cannot be read: "
                         f"{error.strerror or error}") from None
    except UnicodeDecodeError:
        text = ""
    if not _HEX64.fullmatch(text):
        raise ValueError(f"public key file {path} is not a signing public key: it must hold "
                         "64 hex digits (as `fedcare roster key` writes)")
    return bytes.fromhex(text)


def parse_hospital(value: str) -> tuple[str, Path]:
    """Split one ``--hospital NAME=PUBFILE`` value (at its first ``=``).

    Raises
    ------
    ValueError
        If there is no ``=``, or the name or the file is empty.
    """
    name, sep, file = value.partition("=")
    if not sep or not name.strip() or not file.strip():
        raise ValueError(f"--hospital {value!r} must be NAME=PUBFILE")
    return name.strip(), Path(file.strip())


def make_roster(hospitals: list[str], *, colluding: int, min_threshold: int,
                honest: int | None) -> Roster:
    """Build the roster from ``--hospital NAME=PUBFILE`` values, in their order.

    Raises
    ------
    ValueError
        Naming the ``--hospital`` value, key file or flag that is wrong.
    """
    if not hospitals:
        raise ValueError("no --hospital given: the roster needs every hospital's NAME=PUBFILE")
    entries = [parse_hospital(value) for value in hospitals]
    names = [name for name, _ in entries]
    keys = [read_public_key(file) for _, file in entries]
    for position, name in enumerate(names):
        if name in names[:position]:
            raise ValueError(f"--hospital: the name {name!r} is given twice")
        if keys[position] in keys[:position]:
            other = entries[keys.index(keys[position])][1]
            raise ValueError(f"--hospital: {entries[position][1]} and {other} hold the same "
                             "public key (each hospital makes its own with `fedcare roster key`)")
    from common.secagg.roster import build_roster

    try:
        return build_roster(names, keys, colluding, min_threshold, honest)
    except ValueError as error:
        message = str(error)
        for field, flag in _FLAG_OF_FIELD.items():
            message = message.replace(f"field {field}", f"{flag} (roster field {field})")
        match = re.search(r"hospitals\[(\d+)\]", message)
        if match:
            message += f" (--hospital {hospitals[int(match.group(1))]!r})"
        raise ValueError(message) from None


def write_roster(roster: Roster, path: Path, *, force: bool = False) -> None:
    """Write the roster's canonical bytes to ``path`` (0644; an existing file only if ``force``).

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``force`` is false.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(PendingFile(path, roster.to_bytes(), PUBLIC_MODE), force=force)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


@roster_app.command("key")
def roster_key(
    out: Annotated[Path, typer.Option(
        help="The private key file to make (0600, never overwritten); the public key goes to "
             "OUT.pub.")],
) -> None:
    """Make this hospital's Ed25519 signing key pair (run at the hospital)."""
    try:
        files = create_signing_key(out)
    except (FileExistsError, OSError) as error:
        _fail(str(error))
    typer.echo(f"created {files.private_key} (stays at this hospital, 0600; node config "
               "signing-key-path)")
    typer.echo(f"send {files.public_key} to whoever builds the roster; read this fingerprint "
               "out on the phone:")
    typer.echo(f"fingerprint (sha256) {files.fingerprint}")


@roster_app.command("build")
def roster_build(
    hospital: Annotated[list[str], typer.Option(
        help="NAME=PUBFILE: a hospital's name (its SuperNode's registered name) and its "
             "`roster key` public key file; repeat for each, in roster order.")],
    colluding: Annotated[int, typer.Option(
        help="c: the most hospitals assumed to collude with the server.")],
    min_threshold: Annotated[int, typer.Option(
        help="The smallest threshold t any round may use (c < t <= hospitals).")],
    out: Annotated[Path, typer.Option(help="The roster file to write (canonical JSON).")],
    honest: Annotated[int | None, typer.Option(
        help="h, the honest contributors the distributed noise assumes (default: t - c per "
             "round).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing roster file.")] = False,
) -> None:
    """Build the consortium roster and print its SHA-256 (the node config's roster-sha256)."""
    try:
        roster = make_roster(hospital, colluding=colluding, min_threshold=min_threshold,
                             honest=honest)
        write_roster(roster, out, force=force)
    except (ValueError, FileExistsError, OSError) as error:
        _fail(str(error))
    typer.echo(f"wrote {out}: {roster.size} hospitals, c = {roster.colluders}, "
               f"min threshold {roster.min_threshold}")
    typer.echo("send it to every hospital; each checks this digest on the phone and pins it as "
               "roster-sha256:")
    typer.echo(roster.hex_digest)


@roster_app.command("show")
def roster_show(
    path: Annotated[Path, typer.Argument(help="A roster file.")],
    sha256: Annotated[str | None, typer.Option(
        help="The digest agreed on the phone: exit 2 if the roster's differs.")] = None,
) -> None:
    """Show a roster: names, key fingerprints, c, min threshold, h and its SHA-256."""
    from common.secagg.roster import load_roster

    expected = None
    if sha256 is not None:
        expected = sha256.strip().lower()
        if not _HEX64.fullmatch(expected):
            _fail(f"--sha256 must be 64 hex digits, got {sha256!r}")
    try:
        roster = load_roster(path)
    except (ValueError, LookupError) as error:
        _fail(str(error))
    width = max(len(name) for name in roster.names)
    for position, (name, key) in enumerate(zip(roster.names, roster.signing_keys, strict=True)):
        typer.echo(f"{position + 1:>3}  {name:<{width}}  {fingerprint(key)}")
    h = (str(roster.honest) if roster.honest is not None
         else f"t - c per round ({roster.min_threshold - roster.colluders} at t = "
              f"{roster.min_threshold})")
    typer.echo(f"c (colluding)   {roster.colluders}")
    typer.echo(f"min threshold   {roster.min_threshold}")
    typer.echo(f"h (honest)      {h}")
    typer.echo(f"sha256          {roster.hex_digest}")
    if expected is not None:
        if roster.hex_digest != expected:
            _fail(f"roster {path} has sha256 {roster.hex_digest}, expected {expected}")
        typer.echo("matches --sha256")
