"""The Grafana dashboard `deploy/grafana/faas.json` queries only what faas exports: every metric
and every label in its PromQL is checked against `/metrics` of a real `faas up` after a little
traffic (a chat completion, an embedding, the cache, a RAG search, a training job, a
prediction)."""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_faas_up import faas
from tests.support.faas_process import FaasProcess, running_faas

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "faas.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Labels Prometheus gives every series from its scrape target; faas does not emit them.
TARGET_LABELS = frozenset({"job", "instance"})
GRAFANA_VARIABLES = frozenset({"__rate_interval", "__range", "__interval"})

FUNCTIONS = frozenset(
    {
        *("sum", "avg", "min", "max", "count", "group", "topk", "bottomk", "quantile"),
        *("rate", "irate", "increase", "delta", "deriv", "histogram_quantile"),
        *("clamp", "clamp_min", "clamp_max", "abs", "round", "ceil", "floor", "sqrt"),
        *("absent", "scalar", "vector", "time", "sort", "sort_desc", "label_replace"),
        *("avg_over_time", "max_over_time", "min_over_time", "sum_over_time"),
    }
)
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
BINARY_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset"})
MATCH_OPERATORS = frozenset({"=", "!=", "=~", "!~"})

_STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'""")
_RANGE = re.compile(r"\[[^\]]*\]")  # `[5m]`, `[$__rate_interval]`, subqueries `[1h:5m]`
_TOKEN = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*|\d+(?:\.\d+)?|!=|=~|!~|==|\S")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_LABEL_VALUES = re.compile(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*(?:\{[^}]*\})?\s*,\s*(\w+)\s*\)")
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? \S+$")
_SAMPLE_LABEL = re.compile(r'([A-Za-z_]\w*)="(?:[^"\\]|\\.)*"')


# --- reading PromQL -------------------------------------------------------------------------


def _tokens(expr: str) -> list[str]:
    """Tokens with strings emptied and range selectors dropped: what is left are metric and
    label names, functions, keywords, numbers and punctuation."""
    tokens = _TOKEN.findall(_RANGE.sub("", _STRING.sub('""', expr)))
    assert "$" not in tokens, f"a Grafana variable outside a string or a range in {expr}"
    return tokens


def _parentheses(tokens: list[str]) -> dict[int, int]:
    """Each parenthesis's index mapped to its partner's, both ways."""
    pairs: dict[int, int] = {}
    opened: list[int] = []
    for i, token in enumerate(tokens):
        if token == "(":
            opened.append(i)
        elif token == ")":
            start = opened.pop()
            pairs[start], pairs[i] = i, start
    assert not opened, "unbalanced parentheses"
    return pairs


def metric_labels(expr: str) -> dict[str, set[str]]:
    """Each metric an expression selects, with every label it matches on or groups by.

    A `by`/`without` list applies to the metrics of the aggregated expression (prefix or
    suffix form); an `on`/`ignoring`/`group_*` list to every metric of the expression.
    """
    tokens = _tokens(expr)
    pairs = _parentheses(tokens)
    uses: dict[str, set[str]] = {}
    positions: list[tuple[int, str]] = []
    groupings: list[tuple[set[str], int, int]] = []
    i = 0
    while i < len(tokens):
        token, following = tokens[i], tokens[i + 1] if i + 1 < len(tokens) else ""
        if token in GROUPING:
            assert following == "(", f"`{token}` without a label list in {expr}"
            end = pairs[i + 1]
            labels = {t for t in tokens[i + 2 : end] if t != ","}
            if token not in ("by", "without"):
                groupings.append((labels, 0, len(tokens)))
            elif tokens[i - 1] == ")":  # `sum (...) by (...)`
                groupings.append((labels, pairs[i - 1], i - 1))
            else:  # `sum by (...) (...)`
                assert tokens[end + 1] == "(", f"`{token}` list not followed by (...) in {expr}"
                groupings.append((labels, end + 1, pairs[end + 1]))
            i = end + 1
            continue
        if token == "{":
            raise AssertionError(f"a selector without a metric name in {expr}")
        if _IDENTIFIER.fullmatch(token) and token not in FUNCTIONS | BINARY_KEYWORDS:
            assert following != "(", f"unknown PromQL function {token!r} in {expr}"
            positions.append((i, token))
            used = uses.setdefault(token, set())
            if following == "{":
                end = tokens.index("}", i)
                matchers = tokens[i + 2 : end]
                used |= {t for t, op in itertools.pairwise(matchers) if op in MATCH_OPERATORS}
                i = end
        i += 1
    for labels, start, end in groupings:
        for position, metric in positions:
            if start <= position <= end:
                uses[metric] |= labels
    return uses


# --- reading the dashboard and the scrape -----------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for panel in panels(dashboard) for t in panel.get("targets", [])]


def variable_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def dashboard_uses(dashboard: dict[str, Any]) -> dict[str, set[str]]:
    """Every metric the dashboard queries (panels and variables) with the labels it uses."""
    uses: dict[str, set[str]] = {}
    for expr in expressions(dashboard):
        for metric, labels in metric_labels(expr).items():
            uses.setdefault(metric, set()).update(labels)
    for query in variable_queries(dashboard):
        match = _LABEL_VALUES.fullmatch(query.strip())
        assert match, f"variable query {query!r} is not label_values(metric, label)"
        uses.setdefault(match[1], set()).add(match[2])
    return uses


def exported_series(text: str) -> dict[str, set[str]]:
    """Each sample name in Prometheus text (histograms: `_bucket`, `_sum`, `_count`) with the
    labels seen on it."""
    series: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        series.setdefault(match[1], set()).update(_SAMPLE_LABEL.findall(match[2] or ""))
    return series


def not_exported(uses: dict[str, set[str]], series: dict[str, set[str]]) -> list[str]:
    problems = [f"{metric} is not exported" for metric in sorted(set(uses) - set(series))]
    for metric in sorted(set(uses) & set(series)):
        for label in sorted(uses[metric] - series[metric] - TARGET_LABELS):
            problems.append(f"{metric} has no label {label} (it has {sorted(series[metric])})")
    return problems


# --- the dashboard on its own ---------------------------------------------------------------


def test_the_promql_reader_finds_each_metric_with_the_labels_it_uses() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (job, le) (rate(a_bucket{route=~"/x|$y"}[$__range])))'
        ' / on (job) sum(rate(b_total{status!="ok"}[5m])) by (model) + 3600 * c'
    )
    assert metric_labels(expr) == {
        "a_bucket": {"route", "job", "le"},
        "b_total": {"status", "model", "job"},
        "c": {"job"},
    }
    with pytest.raises(AssertionError, match="unknown PromQL function 'rat'"):
        metric_labels("sum(rat(a_total[5m]))")


def test_a_metric_or_label_faas_does_not_export_is_reported() -> None:
    series = exported_series('a_total{job_kind="x"} 1\nb_bucket{le="+Inf"} 2\n')
    uses = {"a_total": {"job", "kind"}, "b_bucket": {"le"}, "b_total": set()}
    assert not_exported(uses, series) == [
        "b_total is not exported",
        "a_total has no label kind (it has ['job_kind'])",
    ]


def test_the_dashboard_is_grafana_json_on_a_prometheus_datasource_variable() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 39 and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["expr"], panel["title"]
    used = {name for expr in expressions(dashboard) for name in re.findall(r"\$(\w+)", expr)}
    assert used - GRAFANA_VARIABLES <= set(variables), "an undefined template variable"


def test_the_dashboard_panels_fit_the_grid_without_overlapping() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in panels(load_dashboard()):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']} is wider than the grid"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[x, y]}"
                taken[x, y] = panel["title"]


def test_the_dashboard_shows_what_an_operator_needs() -> None:
    """Request rate, errors and latency per service; gateway tokens and spend per tenant and
    model; job queue depth; bus buffer drops."""
    uses = dashboard_uses(load_dashboard())
    http = "http_server_request_duration_seconds"
    assert {"job", "http_response_status_code"} <= uses[f"{http}_count"]
    assert {"job", "le"} <= uses[f"{http}_bucket"]
    for spend in ("gen_ai_client_token_usage_sum", "faas_gateway_cost_USD_total"):
        assert {"faas_tenant", "gen_ai_request_model"} <= uses[spend]
    assert {"faas_jobs_queue_depth", "faas_bus_dropped_total"} <= set(uses)


# --- against a running faas -----------------------------------------------------------------

EXAMS = (  # the README tour's: enough rows per class for the cross-validated training
    "hours,slept,passed\n1,4,no\n2,8,no\n3,5,no\n2,6,no\n4,4,no\n1,7,no\n"
    "7,7,yes\n8,6,yes\n9,8,yes\n6,8,yes\n8,5,yes\n9,7,yes\n"
)


def _ok(response: httpx.Response) -> Any:
    assert response.is_success, f"{response.request.url}: {response.status_code} {response.text}"
    return response.json()


def drive_traffic(up: FaasProcess) -> None:
    """One call of each kind whose metrics the dashboard shows."""
    token = faas("token", "--tenant", "acme", "--user", "ann", env=up.env)
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=up.url, headers=auth, timeout=60) as http:
        chat = {"model": "chat-default", "messages": [{"role": "user", "content": "Hello!"}]}
        _ok(http.post("/v1/chat/completions", json=chat))
        _ok(http.post("/v1/embeddings", json={"model": "embed-default", "input": "Hello!"}))
        _ok(http.post("/api/v1/cache", json={"key": "greeting", "value": "hello"}))
        _ok(http.get("/api/v1/cache/greeting"))
        assert httpx.get(f"{up.url}/api/v1/cache/greeting").status_code == 401
        document = {"title": "Refunds", "content": "Refunds are paid within 14 days."}
        _ok(http.post("/api/v1/rag/documents", json=document))
        _ok(http.post("/api/v1/rag/search", json={"query_text": "refunds"}))
        files = {"file": ("exams.csv", EXAMS, "text/csv")}
        dataset = _ok(http.post("/api/v1/ml/datasets", data={"name": "exams"}, files=files))
        train = {
            "name": "exam",
            "task": "classification",
            "algorithm": "logistic_regression",
            "target": "passed",
            "dataset_id": dataset["data"]["id"],
        }
        job = _ok(http.post("/api/v1/ml/models/train", json=train))["data"]["job_id"]
        finished = wait_for_job(http, job)
        assert finished["status"] == "succeeded", finished
        rows = {"rows": [{"hours": 9, "slept": 8}]}
        _ok(http.post("/api/v1/ml/models/exam/predict", json=rows))


def wait_for_job(http: httpx.Client, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = _ok(http.get(f"/api/v1/jobs/{job_id}"))["data"]
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s}s")


def scrape(url: str, uses: dict[str, set[str]], timeout_s: float = 15) -> dict[str, set[str]]:
    """`/metrics`, scraped again until everything used is there (usage events reach their
    consumers asynchronously) or the time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = httpx.get(f"{url}/metrics", timeout=10)
        assert response.status_code == 200
        series = exported_series(response.text)
        if not not_exported(uses, series) or time.monotonic() > deadline:
            return series
        time.sleep(0.5)


@pytest.mark.e2e
@pytest.mark.slow
def test_every_metric_and_label_the_dashboard_queries_is_exported(tmp_path: Path) -> None:
    uses = dashboard_uses(load_dashboard())
    with running_faas(tmp_path) as up:
        drive_traffic(up)
        series = scrape(up.url, uses)
    problems = not_exported(uses, series)
    assert not problems, "the dashboard queries what faas does not export:\n" + "\n".join(problems)
