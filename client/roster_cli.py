"""Consortium roster commands of ``fedcare`` (``fedcare roster key|fingerprint|build|show``).

Each hospital makes its own Ed25519 signing key pair (``roster key``); only the public key
file travels to whoever builds the roster (``roster build --built-by``). Before pinning the
roster (node config ``roster-sha256``), every hospital checks it against every member: its own
key (``roster show --own-key``), the digest (``roster show --sha256``, agreed on the phone) and
each other member's key fingerprint, confirmed with that member itself on the phone (the member
reads it from its own key, ``roster fingerprint``; ``roster show`` prints the list to tick).
A roster that only its builder has checked could hold keys the builder made. The step-by-step
procedure is docs/roster-procedure.md; the protocol itself is in ``common/secagg/roster.py``.

File formats
------------
private key (``--out PATH``)
    PKCS#8 PEM, unencrypted, written 0600; never overwritten.
public key (``PATH.pub``)
    One line: the raw 32-byte Ed25519 public key as 64 lowercase hex digits (the roster's own
    ``signing_key`` encoding), then a newline. Its fingerprint is the SHA-256 of the 32 raw
    bytes, in hex; read out on the phone in 16 groups of 4 hex digits.
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
    help="The consortium roster: hospitals' signing keys (key, fingerprint), the roster "
         "(build), every member's fingerprint and its digest for the phone checks (show).",
    no_args_is_help=True,
    add_completion=False,
)

PUBLIC_SUFFIX = ".pub"
_HEX64 = re.compile(r"[0-9a-f]{64}")
# Roster validation names its fields; the commands name their flags.
_FLAG_OF_FIELD = {"'colluders'": "--colluding", "'min_threshold'": "--min-threshold",
                  "'honest'": "--honest", "'built_by'": "--built-by"}


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


def spoken(hex_digits: str) -> str:
    """``hex_digits`` in groups of 4 (``1a2b 3c4d ...``): the form read out on the phone."""
    from common.secagg.roster import phone_form

    return phone_form(hex_digits)


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
                honest: int | None, built_by: str | None = None) -> Roster:
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
        return build_roster(names, keys, colluding, min_threshold, honest, built_by=built_by)
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
               "out on the phone to the builder and to every other member:")
    typer.echo(f"fingerprint (sha256) {files.fingerprint}")
    typer.echo(f"read out             {spoken(files.fingerprint)}")


@roster_app.command("fingerprint")
def roster_fingerprint(
    public_key: Annotated[Path, typer.Argument(
        help="This hospital's own public key file (`roster key`'s OUT.pub).")],
) -> None:
    """Print this hospital's key fingerprint, to read out to each member that calls."""
    try:
        key = read_public_key(public_key)
    except ValueError as error:
        _fail(str(error))
    typer.echo(f"fingerprint (sha256) {fingerprint(key)}")
    typer.echo(f"read out             {spoken(fingerprint(key))}")


@roster_app.command("build")
def roster_build(
    hospital: Annotated[list[str], typer.Option(
        help="NAME=PUBFILE: a hospital's name (its SuperNode's registered name) and its "
             "`roster key` public key file; repeat for each, in roster order.")],
    colluding: Annotated[int, typer.Option(
        help="c: the most hospitals assumed to collude with the server or be curious (at "
             "least 1 from 4 hospitals on is the safe choice).")],
    min_threshold: Annotated[int, typer.Option(
        help="The smallest threshold t any round may use (c < t <= hospitals).")],
    out: Annotated[Path, typer.Option(help="The roster file to write (canonical JSON).")],
    honest: Annotated[int | None, typer.Option(
        help="h, the honest contributors the distributed noise assumes (default: t - c per "
             "round).")] = None,
    built_by: Annotated[str | None, typer.Option(
        help="Who builds the roster (recorded in it, so every member knows whom to ask).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing roster file.")] = False,
) -> None:
    """Build the consortium roster and print its SHA-256 (the node config's roster-sha256)."""
    try:
        roster = make_roster(hospital, colluding=colluding, min_threshold=min_threshold,
                             honest=honest, built_by=built_by)
        write_roster(roster, out, force=force)
    except (ValueError, FileExistsError, OSError) as error:
        _fail(str(error))
    typer.echo(f"wrote {out}: {roster.size} hospitals, c = {roster.colluders}, "
               f"min threshold {roster.min_threshold}")
    typer.echo("send it to every hospital; each confirms every member's fingerprint with that "
               "member and this digest with everyone on the phone (`fedcare roster show`), "
               "then pins it as roster-sha256:")
    typer.echo(roster.hex_digest)


def _own_entry(roster: Roster, own_key: Path) -> int:
    """The roster position (0-based) holding the key in ``own_key``; exit 2 if none does."""
    try:
        key = read_public_key(own_key)
    except ValueError as error:
        _fail(str(error))
    if key not in roster.signing_keys:
        _fail(f"your public key {own_key} (fingerprint {spoken(fingerprint(key))}) is not on "
              "this roster: do not pin it; ask its builder, by phone, to add your key")
    return roster.signing_keys.index(key)


def show_lines(roster: Roster, *, own: int | None = None) -> list[str]:
    """Return ``roster show``'s lines.

    Every member's fingerprint (read-out form), c, t, h, the digest, and the members this
    hospital still confirms by phone (all but ``own``, its own entry, 0-based).
    """
    width = max(len(name) for name in roster.names)
    builder = roster.built_by if roster.built_by is not None else "not recorded"
    lines = [f"{roster.size} hospitals, built by {builder}"]
    for position, (name, key) in enumerate(zip(roster.names, roster.signing_keys, strict=True)):
        mark = "  (yours)" if position == own else ""
        lines.append(f"{position + 1:>3}  {name:<{width}}  {spoken(fingerprint(key))}{mark}")
    h = (str(roster.honest) if roster.honest is not None
         else f"t - c per round ({roster.min_threshold - roster.colluders} at t = "
              f"{roster.min_threshold})")
    lines += [f"c (colluding)   {roster.colluders}", f"min threshold   {roster.min_threshold}",
              f"h (honest)      {h}", f"sha256          {roster.hex_digest}",
              f"read out        {spoken(roster.hex_digest)}", "",
              "Before pinning: call each member below yourself, on a number you already had "
              "(not one from the roster's builder); it reads its fingerprint from its own key "
              "(`fedcare roster fingerprint KEY.pub`) and you compare it with the line above. "
              "Compare the sha256 with every member too."]
    lines += [f"  [ ] {name}" for position, name in enumerate(roster.names) if position != own]
    if own is None:
        lines.append("  (your own entry: check it with --own-key YOUR.key.pub)")
    return lines


@roster_app.command("show")
def roster_show(
    path: Annotated[Path, typer.Argument(help="A roster file.")],
    sha256: Annotated[str | None, typer.Option(
        help="The digest agreed on the phone: exit 2 if the roster's differs.")] = None,
    own_key: Annotated[Path | None, typer.Option(
        help="This hospital's own public key file: exit 2 if the roster does not hold it.")
    ] = None,
) -> None:
    """Show a roster: builder, each member's fingerprint to confirm by phone, c, t, h, SHA-256."""
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
    own = _own_entry(roster, own_key) if own_key is not None else None
    for line in show_lines(roster, own=own):
        typer.echo(line)
    if expected is not None:
        if roster.hex_digest != expected:
            _fail(f"roster {path} has sha256 {roster.hex_digest}, expected {expected}")
        typer.echo("matches --sha256")
