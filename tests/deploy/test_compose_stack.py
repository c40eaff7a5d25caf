"""``docker compose up`` for real (issue 20): both images built, the stack run and used as a user would.

The scenario is :mod:`deploy.smoke` (also ``python -m bench.deploy``, which times it into
``bench/results/deploy.json``): a Docker engine (the one that answers, else a ``dockerd`` started for
the run and stopped by its PID, with no iptables rules or bridge of its own), the base images pulled or
stood in for by images built from Debian's packages, both images built from ``deploy/Dockerfile``,
``docker-compose up`` of ``docker-compose.yml`` with random secrets, every service healthy, faces from
both simulated cameras over REST, a ``layer=full`` image that only the edge's enhancement layer can make,
a second server replica answering ``layer=full`` for a camera whose stream the first one holds, the
first replica's container restarted with the faces still listed, and ``down -v`` leaving nothing.

It takes 2-5 minutes from a cold cache on the 2-core development machine (``total_s`` in
``bench/results/deploy.json``). ``make test`` installs Debian's docker.io, docker-compose and mmdebstrap
when they are missing.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    from deploy import smoke

    logging.getLogger("deploy").setLevel(logging.INFO)
    root = os.environ.get("FACECODEC_DOCKER_ROOT")  # a kept daemon folder (image cache) for repeated local runs
    result = smoke.run(Path(root) if root else None)
    (tmp_path_factory.mktemp("deploy") / "deploy.json").write_text(json.dumps(result, indent=2))
    return result


def _check(run: dict, name: str) -> None:
    checks = run["checks"]
    failed = {k: v["detail"] for k, v in checks.items() if not v["ok"]}
    assert name in checks, f"the run stopped before {name!r}: {failed}\n{run.get('logs', '')[-6000:]}"
    assert checks[name]["ok"], f"{name}: {checks[name]['detail']}\n{run.get('logs', '')[-6000:]}"


def test_every_service_becomes_healthy(run):
    _check(run, "all_services_healthy")


def test_faces_from_both_simulated_cameras_arrive_over_rest(run):
    _check(run, "faces_from_both_cameras")


def test_a_full_image_is_made_with_the_edges_enhancement_layer(run):
    _check(run, "full_image_through_the_edge")


def test_a_second_replica_reaches_the_edge_that_streams_to_the_first(run):
    _check(run, "full_image_through_the_other_replica")


def test_a_restarted_server_container_still_lists_the_faces(run):
    _check(run, "faces_kept_across_a_server_restart")


def test_down_leaves_no_container_or_volume(run):
    _check(run, "down_removes_everything")


def test_the_images_carry_no_pytorch(run):
    """The services run the converted networks: images of about 1 GB, not the 7 GB a PyTorch wheel makes."""
    assert all(mb < 2500 for mb in run["image_mb"].values()), run["image_mb"]
