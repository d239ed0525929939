"""Jobs submitted on app1 run on the work hosts: both take work, and a job whose host is cut
off mid-run completes exactly once on the other (its lease expires, JetStream redelivers)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.multihost.client import wait_for
from tests.multihost.cluster import JOB_ACK_WAIT_S, Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

KIND = "testjobs.slow_effect"


def host_of(cluster: Cluster) -> dict[int, str]:
    return {proc.pid: host for host, proc in cluster.workers.items()}


def effects(workdir: Path, job_id: str) -> list[int]:
    return [int(pid) for pid in (workdir / f"{job_id}.effects").read_text().split()]


def test_jobs_submitted_on_app1_run_on_both_work_hosts(cluster: Cluster) -> None:
    workdir = cluster.data_dir / "jobs-both"
    workdir.mkdir()
    count, sleep_s = 16, 1.0
    started = time.monotonic()
    ids = cluster.submit("app1", KIND, count, {"dir": str(workdir), "sleep_s": sleep_s})
    views = cluster.finished_jobs(ids, 60)
    took = time.monotonic() - started
    assert [v["status"] for v in views] == ["succeeded"] * count
    hosts = host_of(cluster)
    ran_on = [hosts[v["result"]["pid"]] for v in views]
    assert all(
        effects(workdir, job_id) == [v["result"]["pid"]]
        for job_id, v in zip(ids, views, strict=True)
    )
    assert set(ran_on) == {"work1", "work2"}, ran_on
    cluster.record(
        f"jobs: {count} I/O-bound jobs ({sleep_s:.0f} s each) from app1: "
        f"{ran_on.count('work1')} on work1, {ran_on.count('work2')} on work2, "
        f"{count / took:.1f} jobs/s counting the submitting process's start-up"
    )


def test_a_job_whose_host_is_cut_off_completes_once_on_the_other(cluster: Cluster) -> None:
    workdir = cluster.data_dir / "jobs-cut"
    workdir.mkdir()
    [job_id] = cluster.submit("app1", KIND, 1, {"dir": str(workdir), "sleep_s": 4})
    hosts = host_of(cluster)

    def started_on() -> list[str]:
        return [
            hosts[int(path.name.rsplit("-", 1)[1])] for path in workdir.glob(f"{job_id}.started-*")
        ]

    wait_for("the job to start", lambda: bool(started_on()), 30)
    [victim] = started_on()
    survivor = "work2" if victim == "work1" else "work1"
    cluster[victim].cut()
    cluster.workers[victim].send_signal(signal.SIGKILL)
    cut = time.monotonic()
    [view] = cluster.finished_jobs([job_id], 60)
    completed_s = time.monotonic() - cut
    assert view["status"] == "succeeded", view
    assert hosts[view["result"]["pid"]] == survivor
    assert effects(workdir, job_id) == [cluster.workers[survivor].pid]
    assert sorted(started_on()) == sorted([victim, survivor])
    assert view["attempts"] == 2
    cluster.record(
        f"jobs: {victim} cut off mid-job; the job completed once on {survivor} "
        f"{completed_s:.1f} s later (ack wait {JOB_ACK_WAIT_S} s, lease {2 * JOB_ACK_WAIT_S} s)"
    )
