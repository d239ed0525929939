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


async def price_versions(env: Platform, dataset: str, algorithms: tuple[str, ...]) -> list[Any]:
    """Versions 1..n of the regression model "price", one per algorithm, each succeeded."""
    jobs = []
    for algorithm in algorithms:
        job = await train(
            env,
            name="price",
            task="regression",
            algorithm=algorithm,
            dataset_id=dataset,
            target="y",
        )
        assert job["status"] == "succeeded", job
        jobs.append(job)
    return jobs


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
    for job in await price_versions(env, dataset, ("linear", "ridge")):
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
    no_feature = await env.client.post(
        f"{ML}/models/train",
        json={**base, "algorithm": "random_forest", "features": ["x1", "x9"]},
        headers=A,
    )
    assert no_feature.status_code == 422
    assert no_feature.json()["error"]["details"] == {"column": "x9", "field": "features"}

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


def series_rows(n: int = 200) -> list[dict[str, Any]]:
    """An autoregressive series y[t] = 0.6 y[t-1] + 0.3 y[t-2] + noise, in time order."""
    rng = np.random.default_rng(3)
    values = [10.0, 10.5]
    for _ in range(n - 2):
        values.append(0.6 * values[-1] + 0.3 * values[-2] + 1.0 + float(rng.normal(0, 0.1)))
    return [{"t": t, "sales": v} for t, v in enumerate(values)]


async def test_forecasting_trains_on_lag_features_and_predicts_the_next_value(
    env: Platform,
) -> None:
    rows = series_rows()
    dataset = await create_dataset(env, rows)
    job = await train(
        env,
        name="sales",
        task="forecasting",
        algorithm="linear",
        dataset_id=dataset,
        target="sales",
        hyperparameters={"lags": 2},
        validation_split=0.25,
    )
    assert job["status"] == "succeeded", job
    metrics = job["result"]["metrics"]
    # 198 lagged rows; the last quarter (in time order) is held out
    assert metrics["training_rows"] == 198 and metrics["validation_rows"] == 50
    assert metrics["r2"] > 0.5 and metrics["mae"] < 0.2, metrics
    model = (await env.client.get(f"{ML}/models/sales", headers=A)).json()["data"]
    version = model["versions"][0]
    assert [c["name"] for c in version["input_schema"]] == ["lag_1", "lag_2"]
    assert version["params"]["lags"] == 2 and version["output"]["lags"] == 2

    last, before = rows[-1]["sales"], rows[-2]["sales"]
    features = {"lag_1": last, "lag_2": before}
    answer = await env.client.post(
        f"{ML}/models/sales/predict", json={"features": features}, headers=A
    )
    assert answer.status_code == 200, answer.text
    expected = 0.6 * last + 0.3 * before + 1.0
    assert abs(answer.json()["data"]["predictions"][0] - expected) < 0.1
    meta = (await env.client.get("/v2/models/sales", headers=A)).json()
    assert [i["name"] for i in meta["inputs"]] == ["lag_1", "lag_2"]
    assert meta["outputs"][0]["datatype"] == "FP64"
    missing = await env.client.post(
        f"{ML}/models/sales/predict", json={"features": {"lag_1": last}}, headers=A
    )
    assert missing.status_code == 422
    assert missing.json()["error"]["details"]["column"] == "lag_2"


async def test_forecasting_refuses_short_or_gappy_series_as_failed_jobs(env: Platform) -> None:
    short = await create_dataset(env, series_rows(12), name="short")
    job = await train(
        env,
        name="short",
        task="forecasting",
        algorithm="linear",
        dataset_id=short,
        target="sales",
        hyperparameters={"lags": 5},
    )
    assert job["status"] == "failed" and "at least 15 rows" in job["error"], job
    gappy_rows = series_rows(40)
    gappy_rows[7]["sales"] = None
    gappy = await create_dataset(env, gappy_rows, name="gappy")
    job = await train(
        env, name="gappy", task="forecasting", algorithm="linear", dataset_id=gappy, target="sales"
    )
    assert job["status"] == "failed" and "no gaps" in job["error"], job
    bad_key = await env.client.post(
        f"{ML}/models/train",
        json={
            "name": "x",
            "task": "regression",
            "algorithm": "linear",
            "dataset_id": gappy,
            "target": "sales",
            "hyperparameters": {"lags": 3},
        },
        headers=A,
    )
    assert bad_key.status_code == 422
    assert bad_key.json()["error"]["details"]["hyperparameter"] == "lags"


async def test_cv_folds_report_cross_validated_metrics(env: Platform) -> None:
    regression = await create_dataset(env, regression_rows(), name="reg")
    job = await train(
        env,
        name="price",
        task="regression",
        algorithm="ridge",
        dataset_id=regression,
        target="y",
        cv_folds=5,
    )
    assert job["status"] == "succeeded", job
    metrics = job["result"]["metrics"]
    assert metrics["cv_folds"] == 5 and metrics["training_rows"] == 300
    assert "validation_rows" not in metrics and metrics["r2"] > 0.95, metrics
    model = (await env.client.get(f"{ML}/models/price", headers=A)).json()["data"]
    assert model["versions"][0]["params"]["cv_folds"] == 5

    classification = await create_dataset(env, classification_rows(200), name="cls")
    job = await train(
        env,
        name="churn",
        task="classification",
        algorithm="random_forest",
        dataset_id=classification,
        target="label",
        hyperparameters={"n_estimators": 30},
        cv_folds=4,
    )
    assert job["status"] == "succeeded", job
    metrics = job["result"]["metrics"]
    assert metrics["cv_folds"] == 4 and metrics["accuracy"] > 0.8 and metrics["roc_auc"] > 0.85

    for body in (
        {"task": "clustering", "algorithm": "kmeans", "cv_folds": 3},
        {"task": "regression", "algorithm": "linear", "target": "y", "cv_folds": 1},
    ):
        refused = await env.client.post(
            f"{ML}/models/train", json={"name": "x", "dataset_id": regression, **body}, headers=A
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "validation_failed"


async def test_clustering_assigns_new_points_to_their_cluster(env: Platform) -> None:
    rng = np.random.default_rng(4)
    points = np.vstack([rng.normal(-5, 0.5, size=(100, 2)), rng.normal(5, 0.5, size=(100, 2))])
    dataset = await create_dataset(env, [{"u": float(a), "v": float(b)} for a, b in points])
    job = await train(
        env,
        name="segments",
        task="clustering",
        algorithm="kmeans",
        dataset_id=dataset,
        hyperparameters={"n_clusters": 2, "random_state": 1},
    )
    assert job["status"] == "succeeded", job
    metrics = job["result"]["metrics"]
    assert metrics["clusters"] == 2 and metrics["silhouette"] > 0.8 and metrics["inertia"] > 0
    rows = [{"u": -5.1, "v": -4.9}, {"u": -4.8, "v": -5.2}, {"u": 5.0, "v": 5.1}]
    answer = await env.client.post(f"{ML}/models/segments/predict", json={"rows": rows}, headers=A)
    labels = answer.json()["data"]["predictions"]
    assert all(isinstance(label, int) for label in labels)
    assert labels[0] == labels[1] != labels[2]
    meta = (await env.client.get("/v2/models/segments", headers=A)).json()
    assert meta["outputs"][0]["datatype"] == "INT64"


async def test_batch_prediction_is_a_job_that_fails_naming_a_missing_column(
    env: Platform,
) -> None:
    rows = classification_rows(200)
    dataset = await create_dataset(env, rows, name="train")
    job = await train(
        env,
        name="churn",
        task="classification",
        algorithm="logistic_regression",
        dataset_id=dataset,
        target="label",
    )
    assert job["status"] == "succeeded", job
    features = [{k: v for k, v in r.items() if k != "label"} for r in rows[:50]]
    scoring = await create_dataset(env, features, name="score")
    response = await env.client.post(
        f"{ML}/models/churn/batch-predict", json={"dataset_id": scoring, "version": 1}, headers=A
    )
    assert response.status_code == 202, response.text
    assert response.json()["data"]["status"] == "queued"
    done = await wait_job(env, response.headers["location"])
    assert done["status"] == "succeeded" and done["kind"] == "ml.batch_predict", done
    realtime = await env.client.post(
        f"{ML}/models/churn/predict", json={"rows": features}, headers=A
    )
    expected = realtime.json()["data"]["predictions"]
    assert done["result"]["rows"] == 50 and done["result"]["preview"] == expected[:10]
    assert done["result"]["summary"]["counts"] == {
        label: expected.count(label) for label in ("no", "yes")
    }

    no_x2 = await create_dataset(
        env, [{"x1": r["x1"], "colour": r["colour"]} for r in rows[:20]], name="no-x2"
    )
    response = await env.client.post(
        f"{ML}/models/churn/batch-predict", json={"dataset_id": no_x2}, headers=A
    )
    failed = await wait_job(env, response.headers["location"])
    assert failed["status"] == "failed" and "'x2' is missing" in failed["error"], failed
    assert failed["attempts"] == 1  # a bad input is not retried
    unknown = await env.client.post(
        f"{ML}/models/churn/batch-predict", json={"dataset_id": "nope"}, headers=A
    )
    assert unknown.status_code == 404


async def test_kserve_v2_infer_ready_and_metadata_follow_the_champion(env: Platform) -> None:
    dataset = await create_dataset(env, regression_rows(), name="reg")
    await price_versions(env, dataset, ("linear", "ridge"))
    meta = (await env.client.get("/v2/models/price", headers=A)).json()
    assert meta["name"] == "price" and meta["platform"] == "scikit-learn"
    assert meta["versions"] == ["2", "1"]
    assert meta["inputs"] == [
        {"name": "a", "datatype": "FP64", "shape": [-1]},
        {"name": "b", "datatype": "FP64", "shape": [-1]},
    ]
    ready = (await env.client.get("/v2/models/price/ready", headers=A)).json()
    assert ready == {"name": "price", "version": "2", "ready": True}

    await env.client.post(f"{ML}/models/price/deploy", json={"version": 1}, headers=A)
    infer = {
        "id": "req-1",
        "inputs": [
            {"name": "a", "shape": [2], "datatype": "FP64", "data": [1.0, 0.0]},
            {"name": "b", "shape": [2], "datatype": "FP32", "data": [1.0, 1.0]},
        ],
    }
    answer = await env.client.post("/v2/models/price/infer", json=infer, headers=A)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_name"] == "price" and body["model_version"] == "1" and body["id"] == "req-1"
    (output,) = body["outputs"]
    assert output["name"] == "predict" and output["datatype"] == "FP64" and output["shape"] == [2]
    assert abs(output["data"][0] - 1.0) < 0.2 and abs(output["data"][1] + 2.0) < 0.2
    assert (await env.client.get("/v2/models/price/ready", headers=A)).json()["version"] == "1"

    def tensors(**changes: Any) -> dict[str, Any]:
        b = {"name": "b", "shape": [2], "datatype": "FP64", "data": [1.0, 1.0], **changes}
        return {"inputs": [infer["inputs"][0], b]}

    for request, column, reason in (
        (tensors(datatype="COMPLEX"), "b", "datatype"),
        (tensors(data=[1.0]), "b", "shape"),
        (tensors(shape=[3]), "b", "shape"),
        (tensors(name="c"), "b", "missing"),
        (tensors(datatype="BYTES", data=["x", "y"]), "b", "wrong_type"),
    ):
        refused = await env.client.post("/v2/models/price/infer", json=request, headers=A)
        assert refused.status_code == 422, refused.text
        details = refused.json()["error"]["details"]
        assert (details["column"], details["reason"]) == (column, reason), details
    for path in ("/v2/models/nope", "/v2/models/nope/ready"):
        assert (await env.client.get(path, headers=A)).status_code == 404
    assert (
        await env.client.post("/v2/models/nope/infer", json=infer, headers=A)
    ).status_code == 404


async def test_alias_moves_and_deploys_take_effect_at_once(env: Platform) -> None:
    dataset = await create_dataset(env, regression_rows(), name="reg")
    await price_versions(env, dataset, ("linear", "ridge", "random_forest"))
    one = {"features": {"a": 1.0, "b": 1.0}}

    async def served(**selector: Any) -> int:
        response = await env.client.post(
            f"{ML}/models/price/predict", json={**one, **selector}, headers=A
        )
        assert response.status_code == 200, response.text
        return int(response.json()["data"]["version"])

    assert await served() == 3  # no champion: the latest
    for version in (1, 2, 1):
        deployed = await env.client.post(
            f"{ML}/models/price/deploy", json={"version": version}, headers=A
        )
        assert deployed.json()["data"]["aliases"]["champion"] == version
        assert await served() == version
    await env.client.post(
        f"{ML}/models/price/aliases", json={"alias": "champion", "version": 3}, headers=A
    )
    assert await served() == 3 and await served(alias="champion") == 3
    await env.client.post(
        f"{ML}/models/price/aliases", json={"alias": "shadow", "version": 2}, headers=A
    )
    assert await served(alias="shadow") == 2 and await served(version=1) == 1
    model = (await env.client.get(f"{ML}/models/price", headers=A)).json()["data"]
    assert model["aliases"] == {"champion": 3, "shadow": 2}
    assert {v["version"]: v["aliases"] for v in model["versions"]} == {
        3: ["champion"],
        2: ["shadow"],
        1: [],
    }
    unknown_alias = await env.client.post(
        f"{ML}/models/price/predict", json={**one, "alias": "canary"}, headers=A
    )
    assert unknown_alias.status_code == 404
    for path, body in (
        (f"{ML}/models/price/deploy", {"version": 4}),
        (f"{ML}/models/nope/deploy", {"version": 1}),
        (f"{ML}/models/nope/aliases", {"alias": "x", "version": 1}),
    ):
        assert (await env.client.post(path, json=body, headers=A)).status_code == 404
    bad_alias = await env.client.post(
        f"{ML}/models/price/aliases", json={"alias": "Bad Alias", "version": 1}, headers=A
    )
    assert bad_alias.status_code == 422


async def test_another_tenant_gets_404_for_every_model_route(env: Platform) -> None:
    dataset = await create_dataset(env, regression_rows(60))
    response = await env.client.post(
        f"{ML}/models/train",
        json={
            "name": "p",
            "task": "regression",
            "algorithm": "linear",
            "dataset_id": dataset,
            "target": "y",
        },
        headers=A,
    )
    location = response.headers["location"]
    assert (await wait_job(env, location))["status"] == "succeeded"
    assert (await env.client.get(location, headers=B)).status_code == 404
    infer = {"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]}]}
    for method, path, body in (
        ("GET", "/v2/models/p", None),
        ("POST", "/v2/models/p/infer", infer),
        ("GET", f"{ML}/models/p/drift", None),
        ("POST", f"{ML}/models/p/deploy", {"version": 1}),
        ("POST", f"{ML}/models/p/aliases", {"alias": "mine", "version": 1}),
        ("POST", f"{ML}/models/p/batch-predict", {"dataset_id": dataset}),
    ):
        response = await env.client.request(method, path, json=body, headers=B)
        assert response.status_code == 404, (path, response.text)
    # globex's own model of the same name is separate, and acme's still serves version 1
    theirs = await create_dataset_as(env, B, regression_rows(40))
    response = await env.client.post(
        f"{ML}/models/train",
        json={
            "name": "p",
            "task": "regression",
            "algorithm": "ridge",
            "dataset_id": theirs,
            "target": "y",
        },
        headers=B,
    )
    assert (await wait_job(env, response.headers["location"], B))["status"] == "succeeded"
    mine = (await env.client.get(f"{ML}/models/p", headers=A)).json()["data"]
    assert mine["latest_version"] == 1 and mine["versions"][0]["algorithm"] == "linear"
    assert (await env.client.get(f"{ML}/models/p", headers=B)).json()["data"]["latest_version"] == 1


async def create_dataset_as(env: Platform, headers: dict[str, str], rows: list[Any]) -> str:
    response = await env.client.post(
        f"{ML}/datasets", json={"name": "d", "rows": rows}, headers=headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def test_a_csv_integer_label_gives_the_same_classes_as_json(env: Platform) -> None:
    csv = "x,label\n" + "".join(f"{i},{int(i >= 10)}\n" for i in range(20))
    uploaded = await env.client.post(
        f"{ML}/datasets", files={"file": ("d.csv", csv, "text/csv")}, headers=A
    )
    from_csv = uploaded.json()["data"]["id"]
    from_json = await create_dataset(env, [{"x": i, "label": int(i >= 10)} for i in range(20)])
    for name, dataset in (("csv", from_csv), ("json", from_json)):
        job = await train(
            env,
            name=name,
            task="classification",
            algorithm="logistic_regression",
            dataset_id=dataset,
            target="label",
        )
        assert job["status"] == "succeeded", job
        model = (await env.client.get(f"{ML}/models/{name}", headers=A)).json()["data"]
        assert model["versions"][0]["output"]["classes"] == ["0", "1"]
        answer = await env.client.post(
            f"{ML}/models/{name}/predict", json={"rows": [{"x": 2}, {"x": 17}]}, headers=A
        )
        assert answer.json()["data"]["predictions"] == ["0", "1"]


async def test_concurrent_trainings_of_one_model_get_consecutive_versions(env: Platform) -> None:
    dataset = await create_dataset(env, regression_rows())
    body = {"name": "p", "task": "regression", "algorithm": "ridge", "dataset_id": dataset}
    responses = await asyncio.gather(
        *(
            env.client.post(
                f"{ML}/models/train",
                json={**body, "target": "y", "hyperparameters": {"alpha": float(alpha)}},
                headers=A,
            )
            for alpha in range(4)
        )
    )
    jobs = await asyncio.gather(*(wait_job(env, r.headers["location"]) for r in responses))
    assert [j["status"] for j in jobs] == ["succeeded"] * 4, jobs
    assert [j["attempts"] for j in jobs] == [1] * 4  # nobody trained twice
    assert sorted(j["result"]["version"] for j in jobs) == [1, 2, 3, 4]
    model = (await env.client.get(f"{ML}/models/p", headers=A)).json()["data"]
    params = {v["version"]: v["params"]["alpha"] for v in model["versions"]}
    assert params == {j["result"]["version"]: float(i) for i, j in enumerate(jobs)}
    artifacts = env.runtime.settings.data_dir / "ml" / "acme" / "models"
    assert len(list(artifacts.glob("*.skops"))) == 4  # one per version, no orphans


async def test_prediction_counts_and_latency_are_exported_as_metrics(env: Platform) -> None:
    dataset = await create_dataset(env, classification_rows(120))
    job = await train(
        env,
        name="metered",
        task="classification",
        algorithm="logistic_regression",
        dataset_id=dataset,
        target="label",
    )
    assert job["status"] == "succeeded", job
    rows = [{"x1": 1.0, "x2": 0.5, "colour": "red"}] * 3
    for _ in range(2):
        got = await env.client.post(f"{ML}/models/metered/predict", json={"rows": rows}, headers=A)
        assert got.status_code == 200, got.text
    text = (await env.client.get("/metrics")).text
    counted = [
        line
        for line in text.splitlines()
        if line.startswith("faas_ml_predictions")
        and 'faas_ml_model="metered"' in line
        and 'faas_ml_mode="realtime"' in line
    ]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) == 6.0, counted
    timed = [
        line
        for line in text.splitlines()
        if line.startswith("faas_ml_predict_duration")
        and "_count" in line.split("{")[0]
        and 'faas_ml_model="metered"' in line
    ]
    assert timed and float(timed[0].rsplit(" ", 1)[1]) == 2.0, timed
