"""The compose smoke run: build, ``up``, use the stack as a user would, restart, ``down -v``.

One scenario, run by ``tests/deploy/test_compose_stack.py`` (which asserts on what it records) and by
``python -m bench.deploy`` (which writes it to ``bench/results/deploy.json``):

1. base images (pulled or stood in for) and both images built from ``deploy/Dockerfile``;
2. ``docker-compose up -d`` of ``docker-compose.yml`` as shipped, with random secrets; every service
   healthy (``healthy_s``, from ``up``), a face over REST (``first_face_s``), faces from both cameras;
3. a ``layer=full`` image of a stored face, which the server can only make with the edge's enhancement
   layer (``X-Enhancement-Source: edge``);
4. scale-out: a second replica (``deploy/compose.replicas.yml``) on the same Redis; a ``layer=full``
   image of another face asked of it, while the edge streams to the first replica;
5. the first replica's container restarted: healthy again, the faces stored before still listed;
6. ``down -v``: no container or volume of the project left.

Each step's outcome is recorded under ``checks`` as ``{"ok": bool, "detail": str}``; the run stops at
the first failed step (later steps are then absent) and always takes the stack down.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from deploy.stack import IMAGES, DockerHost, Stack, build_args, build_images, ensure_base_images, free_port, wait_for

log = logging.getLogger("deploy.smoke")
SERVICES = ["redis", "analysis", "camera", "edge"]
CAMERAS = {"entrance", "lobby"}
REPLICA_FILES = ("docker-compose.yml", "deploy/compose.replicas.yml")


class StepFailed(AssertionError):
    pass


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(docker_root: Path | None = None, healthy_timeout: float = 300, face_timeout: float = 240) -> dict:
    """The scenario above; returns what it measured and checked (``passed`` is True when every step was)."""
    out: dict = {"checks": {}, "load_start": _load()}
    checks = out["checks"]

    def check(name: str, ok: bool, detail: str = "") -> None:
        checks[name] = {"ok": bool(ok), "detail": detail}
        log.info("%s: %s %s", name, "ok" if ok else "FAILED", detail)
        if not ok:
            raise StepFailed(f"{name}: {detail}")

    t_all = time.monotonic()
    with DockerHost(docker_root) as host:
        out["engine"] = "started here" if host.started_here else "existing"
        t = time.monotonic()
        out["base_images"] = ensure_base_images(host)
        out["base_images_s"] = round(time.monotonic() - t, 1)
        args = build_args()
        out["build_args"] = args
        t = time.monotonic()
        build = build_images(host, args)
        out["build_s"] = round(time.monotonic() - t, 1)
        out["build_s_per_image"] = build.seconds
        out["context_mb"] = build.context_mb
        out["image_mb"] = {target: host.image_mb(tag) for target, tag in IMAGES.items()}
        stack = Stack(host)
        try:
            _scenario(stack, out, check, healthy_timeout, face_timeout)
        except StepFailed:
            out["logs"] = stack.logs(tail=40)[-20000:]
        except Exception as e:  # a command that failed or a wait that ran out: the step that was running failed
            step = f"step after {list(checks)[-1]}" if checks else "first step"
            checks[step] = {"ok": False, "detail": f"{type(e).__name__}: {e}"[:3000]}
            out["logs"] = stack.logs(tail=40)[-20000:]
        finally:
            t = time.monotonic()
            stack.down()
            out["down_s"] = round(time.monotonic() - t, 1)
            left = host.docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={stack.project}",
                               check=False).stdout.split()
            volumes = host.docker("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={stack.project}",
                                  check=False).stdout.split()
            checks["down_removes_everything"] = {"ok": not left and not volumes,
                                                 "detail": f"{len(left)} containers, {len(volumes)} volumes left"}
    out["total_s"] = round(time.monotonic() - t_all, 1)
    out["load_end"] = _load()
    out["passed"] = all(c["ok"] for c in checks.values())
    return out


def _scenario(stack: Stack, out: dict, check, healthy_timeout: float, face_timeout: float) -> None:
    t_up = time.monotonic()
    stack.up()
    out["up_s"] = round(time.monotonic() - t_up, 1)
    stack.wait_healthy(SERVICES, healthy_timeout)
    out["healthy_s"] = round(time.monotonic() - t_up, 1)
    check("all_services_healthy", True, f"{SERVICES} healthy {out['healthy_s']} s after up")

    wait_for(stack.faces, face_timeout, "a face over REST", 1.0)
    out["first_face_s"] = round(time.monotonic() - t_up, 1)
    try:
        faces = wait_for(lambda: (f := stack.faces()) and CAMERAS <= {x["camera_id"] for x in f} and f,
                         face_timeout, "faces from both cameras", 2.0)
    except TimeoutError:
        faces = stack.faces()
    cameras = sorted({f["camera_id"] for f in faces})
    check("faces_from_both_cameras", CAMERAS <= set(cameras), f"{len(faces)} faces from {cameras}")
    out["faces_before_restart"] = len(faces)

    t = time.monotonic()
    status, body, headers = stack.get(f"/faces/{faces[0]['face_id']}/image?layer=full")
    out["full_image_s"] = round(time.monotonic() - t, 2)
    source = headers.get("X-Enhancement-Source", "")
    check("full_image_through_the_edge", status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n" and source == "edge",
          f"status {status}, {len(body)} bytes, source {source!r}")

    # Scale-out: replica B shares Redis; the edge's streams stay on replica A.
    stack.env["HTTP_PUBLISH_B"] = f"127.0.0.1:{(port_b := free_port())}"
    stack.files = REPLICA_FILES
    stack.up("analysis-b")
    stack.wait_healthy(["analysis-b"], healthy_timeout)
    other = next((f for f in faces[1:] if f["camera_id"] != faces[0]["camera_id"]), faces[-1])
    status, body, headers = stack.get(f"/faces/{other['face_id']}/image?layer=full", port=port_b)
    source = headers.get("X-Enhancement-Source", "")
    check("full_image_through_the_other_replica", status == 200 and source == "edge",
          f"replica B: status {status}, source {source!r}")

    before = {f["face_id"] for f in faces}
    t = time.monotonic()
    stack.restart("analysis")
    stack.wait_healthy(["analysis"], healthy_timeout)
    out["restart_healthy_s"] = round(time.monotonic() - t, 1)
    after = {f["face_id"] for f in stack.faces()}
    check("faces_kept_across_a_server_restart", before <= after,
          f"{len(before & after)} of {len(before)} faces listed after the restart ({len(after)} in all)")
