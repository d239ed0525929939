"""Wire models of the ML service."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from faas.shared.input_rules import MAX_DB_INT

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
Task = Literal["classification", "regression", "clustering", "anomaly_detection", "forecasting"]
Algorithm = Literal[
    "logistic_regression",
    "random_forest",
    "gradient_boosting",
    "linear",
    "ridge",
    "kmeans",
    "isolation_forest",
]


class DatasetCreate(BaseModel):
    name: str = Field(pattern=NAME_PATTERN)
    rows: list[Any]


class DatasetView(BaseModel):
    id: str
    name: str
    format: str
    row_count: int
    column_count: int
    columns: list[dict[str, Any]]
    sha256: str
    created_at: datetime


class TrainRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "iris-classifier",
                    "task": "classification",
                    "algorithm": "random_forest",
                    "dataset_id": "6f1c2a9e4b7d4e0f8a3b5c7d9e1f2a4b",
                    "target": "species",
                    "hyperparameters": {"n_estimators": 50},
                }
            ]
        }
    )

    name: str = Field(pattern=NAME_PATTERN)
    task: Task
    algorithm: Algorithm
    dataset_id: str = Field(min_length=1, max_length=64)
    target: str | None = None
    features: list[str] | None = Field(None, min_length=1, max_length=500)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    validation_split: float = Field(0.2, gt=0.0, lt=0.9)
    cv_folds: int | None = Field(None, ge=2, le=20)

    @model_validator(mode="after")
    def _cv_only_for_supervised(self) -> TrainRequest:
        if self.cv_folds and self.task not in ("classification", "regression"):
            raise ValueError("cv_folds applies to classification and regression only")
        return self


class VersionView(BaseModel):
    version: int
    task: str
    algorithm: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    input_schema: list[dict[str, Any]]
    output: dict[str, Any]
    lineage: dict[str, Any]
    artifact_sha256: str
    aliases: list[str]
    job_id: str | None
    created_at: datetime


class ModelView(BaseModel):
    name: str
    task: str
    aliases: dict[str, int]
    latest_version: int | None
    versions: list[VersionView]
    created_at: datetime
    updated_at: datetime


class AliasSet(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"alias": "staging", "version": 1}]})

    alias: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    version: int = Field(ge=1, le=MAX_DB_INT)


class DeployRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"version": 1}]})

    version: int = Field(ge=1, le=MAX_DB_INT)


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"features": {"sepal_length": 5.1, "petal_length": 1.4}}]}
    )

    features: dict[str, Any] | None = None
    rows: list[dict[str, Any]] | None = Field(None, min_length=1, max_length=10_000)
    version: int | None = Field(None, ge=1, le=MAX_DB_INT)
    alias: str | None = None

    @model_validator(mode="after")
    def _one_input(self) -> PredictRequest:
        if (self.features is None) == (self.rows is None):
            raise ValueError("send exactly one of `features` or `rows`")
        if self.version is not None and self.alias is not None:
            raise ValueError("send at most one of `version` or `alias`")
        return self


class PredictResponse(BaseModel):
    model: str
    version: int
    predictions: list[Any]


class BatchPredictRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"dataset_id": "6f1c2a9e4b7d4e0f8a3b5c7d9e1f2a4b", "alias": "champion"}]
        }
    )

    dataset_id: str = Field(min_length=1, max_length=64)
    version: int | None = Field(None, ge=1, le=MAX_DB_INT)
    alias: str | None = None


class V2Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class V2InferRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "request-1",
                    "inputs": [
                        {
                            "name": "sepal_length",
                            "shape": [2],
                            "datatype": "FP64",
                            "data": [5.1, 7.0],
                        },
                        {
                            "name": "petal_length",
                            "shape": [2],
                            "datatype": "FP64",
                            "data": [1.4, 4.7],
                        },
                    ],
                }
            ]
        }
    )

    id: str | None = None
    inputs: list[V2Tensor] = Field(min_length=1, max_length=500)
    parameters: dict[str, Any] | None = None


class DriftView(BaseModel):
    model: str
    version: int
    window_size: int
    drift: bool
    features: dict[str, dict[str, Any]]
