"""ML service end to end in one process: datasets → training job → registry → realtime and
KServe V2 serving → drift; validation errors name what is wrong; tenants are isolated; a
tampered artifact is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from faas.shared.config import Settings
from tests.conftest import auth
from tests.platform_app import Platform, platform

A = auth("acme")
B = auth("globex")
ML = "/api/v1/ml"


@pytest.fixture
async def env(make_settings: Callable[..., Settings]) -> AsyncIterator[Platform]:
    async with platform(make_settings(job_retry_base_s=0.01), ["ml"]) as env:
        yield env


def classification_rows(n: int = 400, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    colours = rng.choice(["red", "green", "blue"], size=n)
    return [
        {"x1": float(a), "x2": float(b), "colour": str(c), "label": "yes" if a + b > 0 else "no"}
        for (a, b), c in zip(x, colours, strict=True)
    ]


def regression_rows(n: int = 300) -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 3, size=(n, 2))
    return [
        {"a": float(a), "b": float(b), "y": float(3 * a - 2 * b + rng.normal(0, 0.1))} for a, b in x
    ]


async def create_dataset(env: Platform, rows: list[dict[str, Any]], name: str = "d") -> str:
    response = await env.client.post(f"{ML}/datasets", json={"name": name, "rows": rows}, headers=A)
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def wait_job(env: Platform, location: str, headers: dict[str, str] = A) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        job = (await env.client.get(location, headers=headers)).json()["data"]
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return dict(job)
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.05)


async def train(env: Platform, **body: Any) -> dict[str, Any]:
    response = await env.client.post(f"{ML}/models/train", json=body, headers=A)
    assert response.status_code == 202, response.text
    assert response.headers["location"].startswith("/api/v1/jobs/")
    return await wait_job(env, response.headers["location"])


async def test_classifier_trains_registers_and_serves(env: Platform) -> None:
    dataset = await create_dataset(env, classification_rows())
    view = (await env.client.get(f"{ML}/datasets/{dataset}", headers=A)).json()["data"]
    kinds = {c["name"]: c["kind"] for c in view["columns"]}
    assert kinds == {
        "x1": "numeric",
        "x2": "numeric",
        "colour": "categorical",
        "label": "categorical",
    }
    job = await train(
        env,
        name="churn",
        task="classification",
        algorithm="logistic_regression",
        dataset_id=dataset,
        target="label",
        hyperparameters={"C": 10.0},
    )
    assert job["status"] == "succeeded", job
    metrics = job["result"]["metrics"]
    assert metrics["accuracy"] > 0.8 and metrics["roc_auc"] > 0.9 and metrics["f1"] > 0.8

    model = (await env.client.get(f"{ML}/models/churn", headers=A)).json()["data"]
    version = model["versions"][0]
    assert model["latest_version"] == 1
    assert version["lineage"]["dataset_id"] == dataset and version["lineage"]["faas_version"]

    rows = [{"x1": 2.0, "x2": 1.5, "colour": "red"}, {"x1": -2.0, "x2": -1.0, "colour": "pink"}]
    predicted = await env.client.post(f"{ML}/models/churn/predict", json={"rows": rows}, headers=A)
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["data"]["predictions"] == ["yes", "no"]

    infer = {
        "inputs": [
            {
                "name": c,
                "shape": [2],
                "datatype": "BYTES" if c == "colour" else "FP64",
                "data": [r[c] for r in rows],
            }
            for c in ("x1", "x2", "colour")
        ]
    }
    v2 = await env.client.post("/v2/models/churn/infer", json=infer, headers=A)
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["data"] == ["yes", "no"]
    meta = (await env.client.get("/v2/models/churn", headers=A)).json()
    assert [i["name"] for i in meta["inputs"]] == ["x1", "x2", "colour"]
    ready = await env.client.get("/v2/models/churn/ready", headers=A)
    assert ready.status_code == 200 and ready.json()["ready"] is True


async def test_regression_aliases_deploy_and_batch(env: Platform) -> None:
    dataset = await create_dataset(env, regression_rows())
    for algorithm in ("linear", "ridge"):
        job = await train(
            env,
            name="price",
            task="regression",
            algorithm=algorithm,
            dataset_id=dataset,
            target="y",
        )
        assert job["status"] == "succeeded", job
        assert job["result"]["metrics"]["r2"] > 0.95
    one = {"features": {"a": 1.0, "b": 1.0}}
    latest = (await env.client.post(f"{ML}/models/price/predict", json=one, headers=A)).json()
    assert latest["data"]["version"] == 2  # no champion yet: the latest
    deployed = await env.client.post(f"{ML}/models/price/deploy", json={"version": 1}, headers=A)
    assert deployed.json()["data"]["aliases"] == {"champion": 1}
    served = (await env.client.post(f"{ML}/models/price/predict", json=one, headers=A)).json()
    assert served["data"]["version"] == 1
    assert abs(served["data"]["predictions"][0] - 1.0) < 0.2
    moved = await env.client.post(
        f"{ML}/models/price/aliases", json={"alias": "challenger", "version": 2}, headers=A
    )
    assert moved.json()["data"]["aliases"] == {"champion": 1, "challenger": 2}
    by_alias = {**one, "alias": "challenger"}
    answer = (await env.client.post(f"{ML}/models/price/predict", json=by_alias, headers=A)).json()
    assert answer["data"]["version"] == 2
    missing = await env.client.post(
        f"{ML}/models/price/aliases", json={"alias": "x", "version": 9}, headers=A
    )
    assert missing.status_code == 404

    response = await env.client.post(
        f"{ML}/models/price/batch-predict", json={"dataset_id": dataset}, headers=A
    )
    assert response.status_code == 202
    job = await wait_job(env, response.headers["location"])
    assert job["status"] == "succeeded", job
    assert job["result"]["rows"] == 300 and "mean" in job["result"]["summary"]


async def test_anomaly_detection_and_clustering(env: Platform) -> None:
    rng = np.random.default_rng(2)
    points = np.vstack([rng.normal(0, 1, size=(300, 2)), rng.normal(8, 0.5, size=(10, 2))])
    dataset = await create_dataset(env, [{"u": float(a), "v": float(b)} for a, b in points])
    job = await train(
        env,
        name="fraud",
        task="anomaly_detection",
        algorithm="isolation_forest",
        dataset_id=dataset,
        hyperparameters={"contamination": 0.05},
    )
    assert job["status"] == "succeeded", job
    assert 0.01 < job["result"]["metrics"]["anomaly_rate"] < 0.1
    rows = [{"u": 0.0, "v": 0.1}, {"u": 9.0, "v": 9.0}]
    answer = await env.client.post(f"{ML}/models/fraud/predict", json={"rows": rows}, headers=A)
    assert answer.json()["data"]["predictions"] == [False, True]
    job = await train(
        env,
        name="groups",
        task="clustering",
        algorithm="kmeans",
        dataset_id=dataset,
        hyperparameters={"n_clusters": 2},
    )
    assert job["status"] == "succeeded" and job["result"]["metrics"]["silhouette"] > 0.5


async def test_bad_requests_are_422_naming_the_problem(env: Platform) -> None:
    dataset = await create_dataset(env, classification_rows(100))
    base = {"name": "m", "task": "classification", "dataset_id": dataset, "target": "label"}
    bad = await env.client.post(
        f"{ML}/models/train",
        json={**base, "algorithm": "random_forest", "hyperparameters": {"n_estimators": 0}},
        headers=A,
    )
    assert (
        bad.status_code == 422
        and bad.json()["error"]["details"]["hyperparameter"] == "n_estimators"
    )
    unknown = await env.client.post(
        f"{ML}/models/train",
        json={**base, "algorithm": "random_forest", "hyperparameters": {"criterion": "gini"}},
        headers=A,
    )
    assert unknown.json()["error"]["details"]["hyperparameter"] == "criterion"
    wrong_algo = await env.client.post(
        f"{ML}/models/train", json={**base, "algorithm": "kmeans"}, headers=A
    )
    assert wrong_algo.status_code == 422
    no_target = await env.client.post(
        f"{ML}/models/train",
        json={**base, "algorithm": "random_forest", "target": "nope"},
        headers=A,
    )
    assert no_target.status_code == 422 and no_target.json()["error"]["details"]["column"] == "nope"

    for rows, reason in (([], "empty"), ([{"a": 1}, {"a": 2, "b": 3}], "ragged")):
        response = await env.client.post(
            f"{ML}/datasets", json={"name": "bad", "rows": rows}, headers=A
        )
        assert (
            response.status_code == 422 and response.json()["error"]["details"]["reason"] == reason
        )
    ragged_csv = b"a,b\n1,2\n3\n"
    response = await env.client.post(
        f"{ML}/datasets", files={"file": ("x.csv", ragged_csv, "text/csv")}, headers=A
    )
    assert response.status_code == 422 and response.json()["error"]["details"]["reason"] == "ragged"
    good_csv = b"a,b,when\n1,x,2024-01-01T00:00:00\n2,y,2024-02-01T00:00:00\n"
    response = await env.client.post(
        f"{ML}/datasets",
        files={"file": ("ok.csv", good_csv, "text/csv")},
        data={"name": "ok"},
        headers=A,
    )
    assert response.status_code == 201, response.text
    kinds = [c["kind"] for c in response.json()["data"]["columns"]]
    assert kinds == ["numeric", "categorical", "datetime"]

    job = await train(
        env, **base, algorithm="gradient_boosting", hyperparameters={"n_estimators": 20}
    )
    assert job["status"] == "succeeded", job
    url = f"{ML}/models/m/predict"
    missing = await env.client.post(url, json={"features": {"x1": 1.0, "colour": "red"}}, headers=A)
    assert missing.status_code == 422
    assert missing.json()["error"]["details"] == {"column": "x2", "reason": "missing", "row": 0}
    typed = await env.client.post(
        url, json={"features": {"x1": "high", "x2": 1.0, "colour": "red"}}, headers=A
    )
    assert typed.status_code == 422
    assert typed.json()["error"]["details"]["column"] == "x1"
    assert typed.json()["error"]["details"]["reason"] == "wrong_type"


async def test_tenants_cannot_see_each_others_models_or_datasets(env: Platform) -> None:
    dataset = await create_dataset(env, regression_rows(60))
    job = await train(
        env, name="p", task="regression", algorithm="linear", dataset_id=dataset, target="y"
    )
    assert job["status"] == "succeeded"
    assert (await env.client.get(f"{ML}/datasets/{dataset}", headers=B)).status_code == 404
    assert (await env.client.get(f"{ML}/models/p", headers=B)).status_code == 404
    predict = {"features": {"a": 1.0, "b": 2.0}}
    assert (
        await env.client.post(f"{ML}/models/p/predict", json=predict, headers=B)
    ).status_code == 404
    assert (await env.client.get("/v2/models/p/ready", headers=B)).status_code == 404
    steal = {
        "name": "x",
        "task": "regression",
        "algorithm": "linear",
        "dataset_id": dataset,
        "target": "y",
    }
    assert (await env.client.post(f"{ML}/models/train", json=steal, headers=B)).status_code == 404
    assert (await env.client.get(f"{ML}/models", headers=B)).json()["data"]["total"] == 0


async def test_drift_is_flagged_for_shifted_inputs_only(env: Platform) -> None:
    dataset = await create_dataset(env, classification_rows(500))
    for name in ("same", "shifted"):
        job = await train(
            env,
            name=name,
            task="classification",
            algorithm="logistic_regression",
            dataset_id=dataset,
            target="label",
        )
        assert job["status"] == "succeeded"
    same = classification_rows(300, seed=7)
    shifted = [{**r, "x1": r["x1"] + 3.0} for r in same]
    for name, rows in (("same", same), ("shifted", shifted)):
        body = {"rows": [{k: v for k, v in r.items() if k != "label"} for r in rows]}
        assert (
            await env.client.post(f"{ML}/models/{name}/predict", json=body, headers=A)
        ).status_code == 200
    quiet = (await env.client.get(f"{ML}/models/same/drift", headers=A)).json()["data"]
    loud = (await env.client.get(f"{ML}/models/shifted/drift", headers=A)).json()["data"]
    assert quiet["window_size"] == 300 and quiet["drift"] is False, quiet
    assert loud["drift"] is True and loud["features"]["x1"]["drift"] is True
    assert loud["features"]["x1"]["psi"] > 0.2 and loud["features"]["x2"]["drift"] is False


async def test_a_tampered_artifact_is_refused(env: Platform) -> None:
    dataset = await create_dataset(env, regression_rows(60))
    job = await train(
        env, name="t", task="regression", algorithm="linear", dataset_id=dataset, target="y"
    )
    assert job["status"] == "succeeded"
    models = env.runtime.settings.data_dir / "ml" / "acme" / "models"
    (artifact,) = models.glob("*.skops")
    artifact.write_bytes(artifact.read_bytes() + b"tampered")
    response = await env.client.post(
        f"{ML}/models/t/predict", json={"features": {"a": 1.0, "b": 2.0}}, headers=A
    )
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "artifact_corrupt"
    assert "corrupt" in response.json()["error"]["message"]
    ready = await env.client.get("/v2/models/t/ready", headers=A)
    assert ready.status_code == 503 and ready.json()["ready"] is False
