"""faas across several hosts, for real: each host a network namespace on a private bridge
(`netns.py`), faas deployed over them as a cluster would run it (`cluster.py`), and proofs that
state lives where every replica sees it (`test_*.py`). Needs root; skipped elsewhere, failed
under FAAS_TEST_REQUIRE_SERVICES=1. FAAS_MULTIHOST_KEEP_LOGS=1 keeps every process's log;
FAAS_MULTIHOST_REPORT=path writes the figures the proofs measured. `bench/scaleout.py`
measures the same deployment's scale-out."""
