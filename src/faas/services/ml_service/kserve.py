"""The KServe V2 (open inference protocol) view of the registry and the server: model
metadata, readiness and inference with one input tensor per column."""

from __future__ import annotations

from typing import Any

from faas.services.ml_service.models import V2InferRequest
from faas.services.ml_service.registry import ModelRegistry
from faas.services.ml_service.serving import ModelServer
from faas.shared.exceptions import ValidationFailed

V2_TYPES = {"FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT8", "BOOL", "BYTES"}


class KServeV2:
    def __init__(self, registry: ModelRegistry, server: ModelServer) -> None:
        self.registry = registry
        self.server = server

    async def metadata(self, tenant: str, name: str) -> dict[str, Any]:
        row = (await self.registry.resolve(tenant, name)).row
        view = await self.registry.get(tenant, name)
        return {
            "name": name,
            "versions": [str(v.version) for v in view.versions],
            "platform": "scikit-learn",
            "inputs": [
                {
                    "name": c["name"],
                    "datatype": "FP64" if c["kind"] == "numeric" else "BYTES",
                    "shape": [-1],
                }
                for c in row.input_schema
            ],
            "outputs": [{"name": "predict", "datatype": row.output["datatype"], "shape": [-1]}],
        }

    async def ready(self, tenant: str, name: str) -> tuple[dict[str, Any], bool]:
        """The readiness answer, and whether the served version loads."""
        resolved, ready = await self.server.ready(tenant, name)
        return {"name": name, "version": str(resolved.version), "ready": ready}, ready

    async def infer(self, tenant: str, name: str, body: V2InferRequest) -> dict[str, Any]:
        resolved, predictions = await self.server.predict_rows(tenant, name, _rows(body))
        return {
            "model_name": name,
            "model_version": str(resolved.version),
            "id": body.id,
            "outputs": [
                {
                    "name": "predict",
                    "shape": [len(predictions)],
                    "datatype": resolved.row.output["datatype"],
                    "data": predictions,
                }
            ],
        }


def _rows(body: V2InferRequest) -> list[dict[str, Any]]:
    """Column tensors as rows; every tensor must have a known datatype and the same length."""
    length: int | None = None
    for tensor in body.inputs:
        if tensor.datatype not in V2_TYPES:
            raise ValidationFailed(
                f"input {tensor.name!r} has unknown datatype {tensor.datatype}",
                details={"column": tensor.name, "reason": "datatype"},
            )
        if length is None:
            length = len(tensor.data)
        if len(tensor.data) != length or (tensor.shape and tensor.shape[0] != length):
            raise ValidationFailed(
                f"input {tensor.name!r} has a different length from the others",
                details={"column": tensor.name, "reason": "shape"},
            )
    return [{t.name: t.data[i] for t in body.inputs} for i in range(length or 0)]
