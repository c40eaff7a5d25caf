"""``edge-agent``: stream the faces of one or more cameras to the analysis server.

    edge-agent --source rtsp://cam1/stream --camera-id gate-1 --server analysis:50051
    edge-agent --source lobby.avi --camera-id lobby --source 0 --camera-id desk   # two cameras

Every option can also be set in the environment (``EDGE_*``, see ``edge_agent/README.md``);
options given on the command line win. The camera token comes from ``EDGE_TOKEN`` or
``--token-file`` (``--token`` works too, but shows in the process list).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from pydantic import ValidationError

log = logging.getLogger("edge_agent")


class UsageError(Exception):
    """A command line that cannot work; the message says why."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-agent", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", action="append", default=[],
                   help="video file, image folder, rtsp:// or http:// URL, or camera index; repeat for more cameras")
    p.add_argument("--camera-id", action="append", default=[], help="camera id, one per --source, in the same order")
    p.add_argument("--server", help="analysis server gRPC address, host:port (EDGE_SERVER)")
    p.add_argument("--token", help="camera token (prefer EDGE_TOKEN or --token-file)")
    p.add_argument("--token-file", type=Path, help="file holding the camera token")
    p.add_argument("--data-dir", type=Path, help="where the spool and the texture store live (EDGE_DATA_DIR)")
    p.add_argument("--sample-fps", type=float, help="frames analysed per second (EDGE_SAMPLE_FPS)")
    p.add_argument("--interval", type=float, dest="track_interval_s",
                   help="seconds between two observations of one track (EDGE_TRACKING__INTERVAL_S)")
    p.add_argument("--loop", action="store_true", default=None, help="replay file and folder sources forever")
    p.add_argument("--exit-when-done", action="store_true", default=None,
                   help="exit once every source has ended and every observation is acknowledged")
    p.add_argument("--status-interval", type=float, dest="status_interval_s", help="seconds between status lines")
    p.add_argument("--status-file", type=Path, help="also write the counters as JSON to this file")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING... (EDGE_LOG_LEVEL)")
    return p


def settings_from_args(args: argparse.Namespace):
    """The agent's settings: environment first, command-line options over it."""
    from edge_agent.settings import EdgeSettings

    overrides: dict[str, object] = {}
    for name in ("server", "data_dir", "sample_fps", "loop", "exit_when_done",
                 "status_interval_s", "status_file", "log_level"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.token_file is not None:
        try:
            overrides["token"] = args.token_file.read_text().strip()
        except OSError as e:
            raise UsageError(f"cannot read the token file {args.token_file}: {e.strerror}") from None
    if args.token is not None:
        overrides["token"] = args.token
    if args.source or args.camera_id:
        if len(args.source) != len(args.camera_id):
            raise UsageError(f"give one --camera-id per --source "
                             f"(got {len(args.source)} sources and {len(args.camera_id)} camera ids)")
        overrides["cameras"] = [{"id": c, "source": s} for s, c in zip(args.source, args.camera_id)]
    settings = EdgeSettings(**overrides)
    if args.track_interval_s is not None:  # one field of the tracking concern, over the environment's
        if not args.track_interval_s > 0:
            raise UsageError("--interval must be positive")
        tracking = settings.tracking.model_copy(update={"interval_s": args.track_interval_s})
        settings = settings.model_copy(update={"tracking": tracking})
    return settings


def _tune_malloc(arenas: int = 2, mmap_threshold: int = 1 << 20) -> None:
    """glibc's allocator, for an agent that handles megabyte frames in a few threads: two arenas (not one
    per thread that allocates), and buffers of a megabyte or more always mapped on their own, so that
    freeing a frame returns it (glibc otherwise raises that threshold after the first free, and frames then
    come from the heap, which keeps what it grew to). No-op off glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
        libc.mallopt(-3, mmap_threshold)  # M_MMAP_THRESHOLD (fixing it also stops the dynamic raise)
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    _tune_malloc()
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except UsageError as e:
        print(f"edge-agent: {e}", file=sys.stderr)
        return 2
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'settings'}: {err['msg']}" for err in e.errors())
        print(f"edge-agent: invalid settings: {problems}", file=sys.stderr)
        return 2
    if not settings.cameras:
        print("edge-agent: no camera configured: give --source and --camera-id (or EDGE_CAMERAS)", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.storage_key is None:
        log.warning("EDGE_STORAGE_KEY is not set: face crops and base layers are kept in plaintext in %s; set it "
                    "(openssl rand -base64 32)", settings.data_dir)

    from edge_agent.agent import open_agent

    stop = threading.Event()
    holder: list = []

    def on_signal(signum, _frame) -> None:
        log.info("edge agent: %s received", signal.Signals(signum).name)
        stop.set()
        for agent in holder:
            agent.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent = open_agent(settings, stop)
    if agent is None:
        return 1
    holder.append(agent)
    if stop.is_set():
        agent.request_stop()
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
