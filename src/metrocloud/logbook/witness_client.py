"""The submitting side of C2SP ``tlog-witness``: send a signed checkpoint with a consistency
proof to each witness (:mod:`metrocloud.logbook.witness_api`) and gather the cosignatures.

The log remembers, per witness, the size it believes the witness holds. A witness that holds
another size answers ``409`` with its size; the proof is then rebuilt from that size and the
checkpoint sent once more. Witnesses that stay unreachable or refuse are reported, and the
note goes out with the cosignatures it did gather: a client that needs more than that simply
refuses the head (:func:`~metrocloud.logbook.witness.verify_cosigned`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from metrocloud.core.errors import MetrocloudError, Rejected
from metrocloud.core.http import open_http
from metrocloud.logbook.checkpoint import Checkpoint, append_lines, b64
from metrocloud.logbook.witness_api import SIZE_MEDIA_TYPE

MAX_ATTEMPTS = 3
"""Sends per witness and checkpoint: the first, and retries after a stale old size."""


class WitnessUnreachable(MetrocloudError):
    """The witness did not answer (network, TLS or server error)."""


class StaleOldSize(MetrocloudError):
    """The witness holds another size than the request assumed (HTTP 409 with its size)."""

    def __init__(self, url: str, size: int) -> None:
        super().__init__(f"{url} holds size {size}")
        self.size = size


def add_checkpoint_body(old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    """The request body: ``old <size>``, one base64 proof hash per line, an empty line, note."""
    lines = [f"old {old_size}", *(b64(p) for p in proof)]
    return ("\n".join(lines) + "\n\n" + note).encode()


class WitnessClient:
    """Talks to one witness; ``name`` is the witness's key name in cosignature lines."""

    def __init__(self, name: str, http: httpx.Client) -> None:
        self.name = name
        self._http = http

    @classmethod
    def connect(
        cls, name: str, base_url: str, *, tls_trust: Path | None = None, timeout_s: float = 10.0
    ) -> WitnessClient:
        return cls(name, open_http(base_url, tls_trust=tls_trust, timeout_s=timeout_s))

    @property
    def url(self) -> str:
        return str(self._http.base_url)

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise WitnessUnreachable(f"{self.url}: {exc}") from exc
        if response.status_code >= 500:
            raise WitnessUnreachable(f"{self.url}: HTTP {response.status_code}")
        return response

    def add_checkpoint(self, old_size: int, proof: Sequence[bytes], note: str) -> str:
        """The witness's cosignature line(s) for ``note``.

        Raises :class:`StaleOldSize` when the witness holds another size than ``old_size``,
        ``Rejected`` with the witness's reason when it refuses, :class:`WitnessUnreachable`.
        """
        response = self._request(
            "POST",
            "/add-checkpoint",
            content=add_checkpoint_body(old_size, proof, note),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        if response.status_code == 409 and response.headers.get("content-type", "").startswith(
            SIZE_MEDIA_TYPE
        ):
            text = response.text
            if not text.endswith("\n") or not text[:-1].isdigit():
                raise WitnessUnreachable(f"{self.url}: malformed size answer {text[:40]!r}")
            raise StaleOldSize(self.url, int(text[:-1]))
        if response.status_code != 200:
            raise _refusal(self.url, response)
        return response.text

    def cosigned_note(self) -> str | None:
        """The latest checkpoint this witness cosigned, as it keeps it (None: nothing yet)."""
        response = self._request("GET", "/checkpoint")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise _refusal(self.url, response)
        return response.text

    def evidence(self) -> list[dict[str, object]]:
        """The well-signed checkpoints the witness refused (proof of the log's misbehaviour)."""
        response = self._request("GET", "/evidence")
        if response.status_code != 200:
            raise _refusal(self.url, response)
        found = response.json()
        assert isinstance(found, list)
        return found


def _refusal(url: str, response: httpx.Response) -> Rejected:
    try:
        body = response.json()
        return Rejected(str(body["reason"]), f"{url}: {body['detail']}")
    except (ValueError, KeyError, TypeError):
        return Rejected("witness-error", f"{url}: HTTP {response.status_code}")


def _own_line(witness: WitnessClient, answer: str, note: str) -> str:
    """``answer`` if it is one well-formed signature line under the witness's name."""
    try:
        _, lines = Checkpoint.parse(note + answer)
    except Rejected:
        raise Rejected("bad-cosignature", f"{witness.url} answered no signature line") from None
    if len(lines) != len(Checkpoint.parse(note)[1]) + 1 or lines[-1].name != witness.name:
        raise Rejected("bad-cosignature", f"{witness.url} answered no line as {witness.name}")
    return answer


@dataclass
class CosigningRound:
    """What one round of cosigning gathered: the note with the lines, and who did not sign."""

    note: str
    cosigned_by: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


Prover = Callable[[int, int], list[bytes]]
"""``prove(old_size, new_size)``: the log's consistency proof between two of its sizes."""


def gather_cosignatures(
    note: str,
    witnesses: Sequence[WitnessClient],
    known_sizes: dict[str, int],
    prove: Prover,
) -> CosigningRound:
    """Ask every witness to cosign ``note`` (signed by the log), proving consistency from the
    size it holds. ``known_sizes`` (witness name → size) is read and updated in place."""
    checkpoint, _ = Checkpoint.parse(note)
    result = CosigningRound(note)
    lines: list[str] = []
    for witness in witnesses:
        old = known_sizes.get(witness.name, 0)
        for _attempt in range(MAX_ATTEMPTS):
            if old > checkpoint.size:
                result.failures[witness.name] = (
                    f"holds size {old}, larger than {checkpoint.size}: the log was rolled back"
                )
                break
            proof = prove(old, checkpoint.size) if 0 < old < checkpoint.size else []
            try:
                lines.append(_own_line(witness, witness.add_checkpoint(old, proof, note), note))
            except StaleOldSize as stale:
                old = known_sizes[witness.name] = stale.size
                continue
            except (Rejected, WitnessUnreachable) as exc:
                result.failures[witness.name] = str(exc)
                break
            known_sizes[witness.name] = checkpoint.size
            result.cosigned_by.append(witness.name)
            break
        else:
            result.failures[witness.name] = f"size kept changing over {MAX_ATTEMPTS} attempts"
    result.note = append_lines(note, lines) if lines else note
    return result
