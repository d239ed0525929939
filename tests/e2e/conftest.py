"""What the e2e tests report besides pass or fail, printed after the run."""

from __future__ import annotations

import pytest

# /livez probes test_event_loop_lag.py excused because the test process was paused too.
EXCUSED_PROBES: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not EXCUSED_PROBES:
        return
    terminalreporter.write_sep("-", "event-loop lag: slow probes while this process was paused")
    for line in EXCUSED_PROBES:
        terminalreporter.write_line(line)
