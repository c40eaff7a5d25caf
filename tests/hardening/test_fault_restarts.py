"""Three edge agents (real processes, each on its own live camera) stream while the analysis server
is SIGKILLed and restarted once and the Redis server once: ``bench.reliability.run_restarts``,
the scenario of ``python -m bench.reliability restarts`` (which kills the server three times)."""

from __future__ import annotations

import pytest

from bench.reliability import run_restarts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def restarts(tmp_path_factory) -> dict:
    return run_restarts(tmp_path_factory.mktemp("restarts"), agents=3, server_kills=1, redis_kills=1)


def test_every_face_sent_is_stored_exactly_once(restarts):
    assert restarts["faces_sent"] >= 6  # three cameras, faces before, during and after the outages
    assert restarts["faces_stored"] == restarts["faces_sent"] and restarts["missing"] == []
    assert restarts["duplicates"] == 0 and restarts["faces_listed"] == restarts["faces_sent"]
    assert restarts["spooled_at_end"] == [0, 0, 0] and restarts["agent_exit_codes"] == [0, 0, 0]


def test_edge_spools_stay_within_their_caps(restarts):
    assert all(0 < b <= restarts["spool_cap_bytes"] for b in restarts["spool_max_bytes_seen"])
    assert restarts["spool_dropped"] == 0


def test_image_requests_fail_clearly_during_outages_and_succeed_after(restarts):
    during = {o["fault"]: o["statuses"] for o in restarts["image_during_outage"]}
    assert set(during["server"]) == {"refused"}  # nothing listens
    assert set(during["redis"]) == {503}  # the server answers: its store is unreachable
    for r in restarts["image_after_recovery"]:
        assert r["statuses"][-1] == 200 and set(r["statuses"][:-1]) <= {503, 504}
