"""What a manufacturer does to ship an update: compute the identification the new code
will show, state it in signed metadata, and pack the files.

The identification is computed the way the cloud will compute it (:mod:`.preflight`): the
files are staged in a scratch install root over the installation the update is built for,
and a fresh process loads the component from there.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from metrocloud.core.messages import Signer
from metrocloud.download.installroot import InstallRoot
from metrocloud.download.package import PackageFile, PackageMetadata, build_package
from metrocloud.download.preflight import identify


def expected_identification(
    component: str, version: str, files: dict[str, bytes]
) -> dict[str, str]:
    """The identification ``component`` shows once ``files`` replace its modules."""
    with tempfile.TemporaryDirectory(prefix="metrocloud-build-") as scratch:
        root = InstallRoot(Path(scratch))
        release = root.stage(component, version, 1, files)
        return identify(root.root, component, release)


def build_update(
    signer: Signer,
    component: str,
    version: str,
    sequence: int,
    files: dict[str, bytes],
    *,
    valid_for: timedelta = timedelta(days=30),
    now: datetime | None = None,
) -> bytes:
    """A signed package of ``files`` as release ``version`` of ``component``."""
    found = expected_identification(component, version, files)
    issued = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    metadata = PackageMetadata(
        component=component,
        name=found["name"],
        version=found["version"],
        sequence=sequence,
        issued_at=issued.isoformat(),
        expires=(issued + valid_for).isoformat(),
        checksum=found["checksum"],
        files=tuple(PackageFile.of(module, source) for module, source in files.items()),
    )
    return build_package(signer, metadata, files)
