"""The README's dataset limits, held at their boundaries: 200,000 rows and 500 columns are
accepted, one more is 422 with the reason, and a refused upload keeps nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from faas.services.ml_service import data
from faas.shared.config import Settings
from faas.shared.exceptions import ValidationFailed
from tests.conftest import auth
from tests.platform_app import Platform, platform

A = auth("acme")
DATASETS = "/api/v1/ml/datasets"


def csv_of(rows: int, columns: int = 1) -> str:
    header = ",".join(f"c{i}" for i in range(columns))
    line = ",".join("1" for _ in range(columns))
    return header + "\n" + (line + "\n") * rows


def refusal(text: str) -> str:
    with pytest.raises(ValidationFailed) as caught:
        data.parse_upload(text.encode(), "d.csv", "text/csv")
    return str(caught.value.details["reason"])


def test_the_limits_are_the_documented_ones() -> None:
    assert data.MAX_ROWS == 200_000
    assert data.MAX_COLUMNS == 500


def test_a_csv_holds_at_most_200_000_rows() -> None:
    rows, fmt = data.parse_upload(csv_of(200_000).encode(), "d.csv", "text/csv")
    assert fmt == "csv" and len(rows) == 200_000
    assert refusal(csv_of(200_001)) == "too_many_rows"


def test_json_records_hold_at_most_200_000_rows() -> None:
    assert len(data.check_records([{"x": 1}] * 200_000)) == 200_000
    with pytest.raises(ValidationFailed) as caught:
        data.check_records([{"x": 1}] * 200_001)
    assert caught.value.details["reason"] == "too_many_rows"


def test_a_dataset_holds_at_most_500_columns() -> None:
    rows, _ = data.parse_upload(csv_of(2, columns=500).encode(), "d.csv", "text/csv")
    assert len(rows[0]) == 500
    assert refusal(csv_of(2, columns=501)) == "too_many_columns"
    wide = {f"c{i}": 1 for i in range(501)}
    with pytest.raises(ValidationFailed) as caught:
        data.check_records([wide])
    assert caught.value.details["reason"] == "too_many_columns"


@pytest.fixture
async def env(make_settings: Callable[..., Settings]) -> AsyncIterator[Platform]:
    async with platform(make_settings(), ["ml"]) as env:
        yield env


async def test_an_upload_over_the_row_limit_is_422_and_keeps_nothing(env: Platform) -> None:
    upload = {"file": ("big.csv", csv_of(200_001).encode(), "text/csv")}
    response = await env.client.post(DATASETS, files=upload, data={"name": "big"}, headers=A)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["reason"] == "too_many_rows"
    listed = (await env.client.get(DATASETS, headers=A)).json()["data"]
    assert listed["total"] == 0


async def test_json_rows_over_the_column_limit_are_422(env: Platform) -> None:
    wide = [{f"c{i}": 1 for i in range(501)}]
    response = await env.client.post(DATASETS, json={"name": "wide", "rows": wide}, headers=A)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["reason"] == "too_many_columns"
