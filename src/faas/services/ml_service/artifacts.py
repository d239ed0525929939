"""Model artifacts: skops files in the data dir with a sha256 recorded at save time and checked
before every load. Loading trusts only the types faas's own pipelines are made of."""

from __future__ import annotations

import hashlib
from importlib import import_module
from pathlib import Path
from typing import Any

from faas.shared.exceptions import FaaSError

# Everything the pipelines built in training.py consist of that skops does not trust by default.
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.")
TRUSTED_EXACT = frozenset({"builtins.object", "builtins.type"})


class CorruptArtifact(FaaSError):
    status_code = 500
    code = "artifact_corrupt"


def _trusted(name: str) -> bool:
    return name.startswith(TRUSTED_PREFIXES) or name in TRUSTED_EXACT


def artifact_path(root: Path, tenant: str, version_id: str) -> Path:
    return root / tenant / "models" / f"{version_id}.skops"


def save(pipeline: Any, path: Path) -> tuple[str, list[str]]:
    """Write the artifact; (sha256, the non-default types it needs trusted)."""
    sio = import_module("skops.io")

    path.parent.mkdir(parents=True, exist_ok=True)
    data = sio.dumps(pipeline)
    types = sorted(sio.get_untrusted_types(data=data))
    refused = [t for t in types if not _trusted(t)]
    if refused:  # a pipeline faas built never contains these
        raise FaaSError(f"refusing to store a model containing {refused}")
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return hashlib.sha256(data).hexdigest(), types


def load(path: Path, sha256: str, types: list[str]) -> Any:
    """Load an artifact whose bytes still hash to `sha256`, trusting only `types` (recorded
    when faas saved it, and re-checked against the allow-list)."""
    sio = import_module("skops.io")

    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise CorruptArtifact(
            f"the model artifact {path.name} is missing", details={"artifact": path.name}
        ) from exc
    if hashlib.sha256(data).hexdigest() != sha256:
        raise CorruptArtifact(
            "the model artifact is corrupt: its sha256 does not match the registry, "
            "so it was not loaded",
            details={"artifact": path.name, "expected_sha256": sha256},
        )
    trusted = [t for t in types if _trusted(t)]
    return sio.loads(data, trusted=trusted)
