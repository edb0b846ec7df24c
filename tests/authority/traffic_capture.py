"""Everything the cloud sees on its broker, recorded by a process of its own, and each
message tied to the meter it is about as far as the cloud itself can tell.

:class:`TrafficCapture` starts this file as a separate Python process (its own interpreter
and event loop, so that what the test process computes does not shift the arrival times).
The process connects to the broker as the ``admin`` role, subscribes to ``>`` and records
every message: arrival time (``time.monotonic``, one clock for every process of the host),
subject, reply subject, payload size, headers, a digest of the payload, the payload itself
when it is small, and what the cloud can read in it (:func:`readable`: msgpack maps and
lists, signed envelopes and their bodies opened, ciphertexts and other long byte strings
replaced by their length). When its standard input closes it hands the record over in a
file and exits.

:func:`link` then does what the operator could do with the record: it finds the meter or
customer a message names (in its subject, in its readable fields, in a log event's text),
follows answers to their requests and copies to their original, and maps customers to
meters with the operator's own meter records.
"""

from __future__ import annotations

import asyncio
import hashlib
import pickle
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import msgpack

from metrocloud.bus.subjects import subject_family

KEEP_BYTES = 64 * 1024
"""Payloads up to this size are kept as they are."""
SHORT_BYTES = 4096
"""Byte strings up to this size stay in :func:`readable` (certificates, signatures)."""
COPY_BYTES = 256
"""A payload at least this large that repeats an earlier one is taken for its copy."""
FETCH_SUBJECT = "egress.display.fetch"
READY = b"capturing\n"

ID = re.compile(r"(?<![\w-])([mc])-(\d{4})(?![\w-])")
"""A meter (``m-0001``) or customer (``c-0001``) identifier."""

Opaque = tuple[str, int]
"""``("bytes", n)``: a byte string of ``n`` bytes the cloud cannot read (msgpack gives lists,
never tuples, so the two do not mix)."""


def readable(value: Any) -> Any:
    """``value`` as the cloud can read it: a byte string that holds a msgpack map (an
    envelope, its body, the display's answer) is opened, recursively; another one longer
    than :data:`SHORT_BYTES` becomes ``("bytes", its length)``."""
    if isinstance(value, bytes):
        if value[:1] and (0x80 <= value[0] <= 0x8F or value[0] in (0xDE, 0xDF)):
            try:
                opened = msgpack.unpackb(value, raw=False, strict_map_key=False)
            except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
                opened = None
            if isinstance(opened, dict):
                return readable(opened)
        return value if len(value) <= SHORT_BYTES else ("bytes", len(value))
    if isinstance(value, dict):
        return {str(k): readable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [readable(v) for v in value]
    return value


@dataclass(frozen=True)
class Seen:
    """One message as the broker delivered it to the capture."""

    order: int
    at: float
    subject: str
    reply: str
    size: int
    headers: tuple[tuple[str, str], ...]
    digest: str
    data: bytes | None
    """The payload, if at most :data:`KEEP_BYTES`."""
    fields: Any
    """What the cloud can read in it (:func:`readable`), None if it is no msgpack map."""


# -- the capturing process -------------------------------------------------------------


async def _capture(data_root: Path, out: Path) -> None:
    from metrocloud.bus.connect import connect
    from metrocloud.cloud.runtime import DataDir

    data = DataDir(data_root)
    url = str(data.cluster()["nats_url"])
    nc = await connect(url, data.credentials("admin"), name="traffic-capture", role="admin")
    seen: list[Seen] = []

    async def record(msg: Any) -> None:
        at = time.monotonic()
        payload: bytes = msg.data or b""
        fields = readable(payload)
        seen.append(
            Seen(
                len(seen),
                at,
                msg.subject,
                msg.reply or "",
                len(payload),
                tuple(sorted((str(k), str(v)) for k, v in (msg.headers or {}).items())),
                hashlib.sha256(payload).hexdigest(),
                payload if len(payload) <= KEEP_BYTES else None,
                fields if isinstance(fields, dict) else None,
            )
        )

    await nc.subscribe(">", cb=record, pending_msgs_limit=1 << 20, pending_bytes_limit=1 << 32)
    await nc.flush()
    sys.stdout.buffer.write(READY)
    sys.stdout.buffer.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)
    await nc.flush()
    await asyncio.sleep(0.5)  # what is still on its way
    await nc.drain()
    with out.open("wb") as file:  # plain tuples: this process's classes live in __main__
        pickle.dump([astuple(s) for s in seen], file)


class TrafficCapture:
    """Runs the capture process; :meth:`stop` returns what it recorded."""

    def __init__(self, data_root: Path, out: Path) -> None:
        self.data_root = data_root
        self.out = out
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start capturing; returns once the subscription to ``>`` is in place."""
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(self.data_root), str(self.out)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line != READY:
            self.process.kill()
            _, err = self.process.communicate(timeout=30)
            raise RuntimeError(f"the capture did not start: {line!r} {err.decode()[-2000:]}")

    def stop(self, timeout_s: float = 60.0) -> list[Seen]:
        assert self.process is not None
        _, err = self.process.communicate(timeout=timeout_s)  # closes its standard input
        if self.process.returncode != 0:
            raise RuntimeError(f"the capture failed: {err.decode()[-2000:]}")
        with self.out.open("rb") as file:
            rows: list[tuple[Any, ...]] = pickle.load(file)
        return [Seen(*row) for row in rows]

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


# -- what the operator can read from it ------------------------------------------------


@dataclass(frozen=True)
class Linked:
    """A captured message tied to one meter."""

    seen: Seen
    meter: str
    family: str
    """Its subject with identifiers replaced (``reply<...`` for an answer, ``deliver<...``
    for a stream's message handed to a consumer, ``copy<...`` for a repeated payload)."""
    reply_of: Seen | None = None
    """For an answer: the request it answers."""


def family(subject: str) -> str:
    """A subject with its identifiers (meters, customers, inboxes) replaced."""
    if subject.startswith("_INBOX"):
        return subject.split(".", 1)[0] + ".>"
    return subject_family(subject)


def strings(fields: Any) -> Iterator[str]:
    """Every text in a readable structure (byte strings that are text included)."""
    if isinstance(fields, str):
        yield fields
    elif isinstance(fields, bytes):
        yield fields.decode("latin-1")
    elif isinstance(fields, dict):
        for key, value in fields.items():
            yield key
            yield from strings(value)
    elif isinstance(fields, list):
        for value in fields:
            yield from strings(value)


def _named(texts: Iterator[str], meter_of: Mapping[str, str]) -> set[str]:
    meters = set()
    for text in texts:
        for kind, number in ID.findall(text):
            name = f"{kind}-{number}"
            meters.add(name if kind == "m" else meter_of.get(name, ""))
    return meters - {""}


def link(seen: Sequence[Seen], meter_of: Mapping[str, str]) -> list[Linked]:
    """Every captured message the operator can tie to exactly one meter.

    ``meter_of`` maps customer ids to meter ids (the operator's meter records). In order
    of arrival: the identifiers in the subject; else the request a message answers; else
    the identifiers in its readable fields (an envelope's body, a log event's text); else
    the earlier message whose payload it repeats.
    """
    linked: list[Linked] = []
    by_reply: dict[str, Linked] = {}
    by_digest: dict[str, Linked] = {}
    for message in seen:
        found: Linked | None = None
        meters = _named(iter([message.subject]), meter_of)
        if not meters and message.subject in by_reply:
            request = by_reply[message.subject]
            found = Linked(message, request.meter, f"reply<{request.family}", request.seen)
        elif not meters:
            if message.fields is not None:
                meters = _named(strings(message.fields), meter_of)
            elif message.data is not None:
                meters = _named(iter([message.data.decode("latin-1")]), meter_of)
        if found is None and len(meters) == 1:
            kind = family(message.subject)
            if message.reply.startswith("$JS.ACK."):  # a stream's message, to a consumer
                kind = f"deliver<{kind}"
            found = Linked(message, meters.pop(), kind)
        elif found is None and not meters and message.size >= COPY_BYTES:
            original = by_digest.get(message.digest)
            if original is not None:
                found = Linked(message, original.meter, f"copy<{original.family}")
        if found is None:
            continue
        linked.append(found)
        if message.reply:
            by_reply[message.reply] = found
        if message.size >= COPY_BYTES:
            by_digest.setdefault(message.digest, found)
    return linked


def main(argv: Sequence[str]) -> None:
    data_root, out = (Path(a) for a in argv)
    asyncio.run(_capture(data_root, out))


if __name__ == "__main__":
    main(sys.argv[1:])
