"""The deployment every multi-host test shares (built once for the package, start-up being the
slow part, and stopped before the rest of the suite runs), and
the figures the tests measured, printed after the run and written to FAAS_MULTIHOST_REPORT."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import unavailable
from tests.multihost.cluster import Cluster, running_cluster
from tests.multihost.netns import unusable_reason

FIGURES: list[str] = []


@pytest.fixture(scope="package")
def cluster() -> Iterator[Cluster]:
    reason = unusable_reason()
    if reason is not None:
        unavailable(reason)
    with running_cluster() as built:
        built.figures = FIGURES
        yield built


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.write_sep("-", "multi-host figures")
    for line in FIGURES:
        terminalreporter.write_line(line)
    report = os.environ.get("FAAS_MULTIHOST_REPORT")
    if report:
        Path(report).write_text("\n".join(FIGURES) + "\n")
