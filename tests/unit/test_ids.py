"""Ids: `new_id` from the system's randomness; `trace_id` (request, correlation and event ids)
from a seeded generator that a forked child reseeds, so two workers never share a sequence."""

from __future__ import annotations

import os
import re

from faas.shared.context import new_id, trace_id

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def test_both_are_32_hex_characters_and_do_not_repeat() -> None:
    for make in (new_id, trace_id):
        ids = {make() for _ in range(20_000)}
        assert len(ids) == 20_000
        assert all(HEX32.match(i) for i in ids)


def test_a_forked_child_draws_other_trace_ids_than_its_parent() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.write(write, ",".join(trace_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    ours = [trace_id() for _ in range(5)]
    with os.fdopen(read) as pipe:
        theirs = pipe.read().split(",")
    os.waitpid(pid, 0)
    assert len(theirs) == 5 and not set(ours) & set(theirs)
