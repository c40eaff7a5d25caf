"""Fixtures of the hardening tests: every process (or proxy) a test starts is stopped at the end."""

from __future__ import annotations

import pytest


@pytest.fixture
def procs():
    started: list = []
    yield started
    for p in reversed(started):
        try:
            (p.close if hasattr(p, "close") else p.stop)()
        except Exception:  # one failed stop must not leave the others running
            pass
