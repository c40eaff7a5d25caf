"""Fixtures of the edge tests (helpers live in edge_testkit.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from edge_testkit import ScriptedPeer, make_video


@pytest.fixture
def short_video(tmp_path) -> Path:
    """Two people, 2 s each, 10 fps."""
    return make_video(tmp_path / "two_people.avi", ["Ashanti", "Kurt_Warner"], 2.0, 10.0, gap_s=1.0)


@pytest.fixture
def peer():
    p = ScriptedPeer()
    p.start()
    yield p
    p.stop()


@pytest.fixture
def make_peer():
    """``make_peer(port=0, ack=True)`` starts a ScriptedPeer; every one is stopped after the test."""
    peers = []

    def make(port: int = 0, ack: bool = True) -> ScriptedPeer:
        p = ScriptedPeer(ack=ack)
        p.start(port)
        peers.append(p)
        return p

    yield make
    for p in peers:
        p.stop()
