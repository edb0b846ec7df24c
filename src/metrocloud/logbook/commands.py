"""``metrocloud logbook``: verify the whole log, or one entry, and show entries.

Works on a copy of the logbook file (``<data>/logbook.sqlite``), which is how an authority
audits: it recomputes every hash itself and trusts nothing the operator says. A verdict is
printed in one line; the exit status is 0 when verified and 1 otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from metrocloud.logbook.merkle import verify_inclusion
from metrocloud.logbook.transparency import AUDIENCES, MerkleLogbook

app = typer.Typer(add_completion=False, help="The logbook: an RFC 9162 transparency log.")
console = Console()

LogFile = Annotated[Path, typer.Argument(help="The logbook file (<data>/logbook.sqlite).")]


def _open(path: Path) -> MerkleLogbook:
    if not path.is_file():
        console.print(f"[red]not verified:[/] no logbook at {path}")
        raise typer.Exit(1)
    return MerkleLogbook(path)


def _head(head: str | None, size: int | None) -> tuple[bytes, int] | None:
    if head is None and size is None:
        return None
    if head is None or size is None:
        console.print("[red]not verified:[/] --head and --size go together")
        raise typer.Exit(1)
    try:
        return bytes.fromhex(head), size
    except ValueError:
        console.print(f"[red]not verified:[/] --head {head!r} is not hex")
        raise typer.Exit(1) from None


@app.command()
def verify(
    path: LogFile,
    entry: Annotated[int | None, typer.Option(help="Check only this entry's inclusion.")] = None,
    head: Annotated[str | None, typer.Option(help="Root hash (hex) seen earlier.")] = None,
    size: Annotated[int | None, typer.Option(help="Size of the log when --head was seen.")] = None,
) -> None:
    """Recompute the whole log (or prove one entry) and print a verdict.

    With ``--head`` and ``--size``: also check the log only grew since that head was seen
    (and, with ``--entry``, prove the entry against that head).
    """
    seen = _head(head, size)
    book = _open(path)
    try:
        if entry is not None:
            root, tree_size = seen or (book.head(), book.size)
            if not 0 <= entry < tree_size:
                console.print(f"[red]not verified:[/] no entry {entry} in a log of {tree_size}")
                raise typer.Exit(1)
            record = book.get(entry)
            leaf = book.leaf_hash(entry)
            proof = book.inclusion_proof(entry, tree_size)
            ok = verify_inclusion(leaf, entry, tree_size, proof, root)
            event = record.event
            line = f"entry {entry}: {event.kind.value} {event.subject} by {event.actor}"
            if not ok:
                console.print(f"[red]not verified:[/] {line}: not in the tree {root.hex()}")
                raise typer.Exit(1)
            console.print(
                f"[green]verified:[/] {line}, in the log of {tree_size} entries with root "
                f"{root.hex()} ({len(proof)} proof hashes)"
            )
            return
        verdict = book.verify() if seen is None else book.verify_against(*seen)
        if not verdict.ok:
            console.print(f"[red]not verified:[/] entry {verdict.first_bad_seq}: {verdict.reason}")
            raise typer.Exit(1)
        grew = f", grown from {seen[1]} consistently" if seen else ""
        console.print(
            f"[green]verified:[/] {verdict.size} entries, root {verdict.head.hex()}{grew}"
        )
    finally:
        book.close()


@app.command()
def show(
    path: LogFile,
    audience: Annotated[
        str, typer.Option(help=f"Whose view: {', '.join(sorted(AUDIENCES))}.")
    ] = "authority",
    start: Annotated[int, typer.Option(help="First entry.")] = 0,
    limit: Annotated[int, typer.Option(help="How many entries at most.")] = 50,
) -> None:
    """Print entries (JSON lines) in one audience's view."""
    if audience not in AUDIENCES:
        console.print(f"[red]unknown audience {audience!r}[/]; one of {sorted(AUDIENCES)}")
        raise typer.Exit(1)
    book = _open(path)
    try:
        for record in book.entries(audience=audience, start=start, limit=limit):
            typer.echo(json.dumps({"seq": record.seq, **json.loads(record.event.to_json())}))
    finally:
        book.close()
