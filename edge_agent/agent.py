"""The edge agent: cameras -> faces -> tracks -> spooled observations -> streams.

Per camera, a worker thread reads sampled frames from its source, asks its
:class:`~edge_agent.motion.MotionGate` where the scene changed (nothing changed: the detector does not
run, and the frame is not even decoded in full when it came as a JPEG), runs its
:class:`~edge_agent.pipeline.FacePipeline` on those regions, feeds its :class:`~edge_agent.tracker.Tracker`
and, for every observation the tracker emits, stores the texture, encodes the base layer and writes
the observation to the spool; the camera's :class:`~edge_agent.client.CameraStream` sends what the
spool holds. No error in one frame, one face or one camera stops the others.

Cores: every camera has its own worker thread and the networks release the interpreter while they
run, so N cameras use up to N cores; ``EDGE_CORES`` caps how many analyse a frame at once (default one
per camera, at most the machine's), and the runtime is compiled for that many parallel calls.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from edge_agent.client import CameraStream, StreamConfig
from edge_agent.errors import EdgeAgentError, SourceError, StoreError
from edge_agent.motion import MotionGate, MotionSettings, covers
from edge_agent.pipeline import FacePipeline, spooled_face
from edge_agent.settings import CameraConfig, EdgeSettings
from edge_agent.sources import BadFrame, Tick, open_source
from edge_agent.spool import V2, Spool
from edge_agent.status import Counters, status_line, write_status_file
from edge_agent.texture import TextureStore
from edge_agent.tracker import Emission, Sighting, Tracker

log = logging.getLogger(__name__)

MB = 1024 * 1024


class CameraWorker:
    """Frames of one camera through the pipeline and the tracker into the spool."""

    def __init__(self, camera: CameraConfig, settings: EdgeSettings, pipeline: FacePipeline, spool: Spool,
                 texture: TextureStore, counters: Counters, cores: threading.Semaphore | None = None):
        self.camera = camera
        self.settings = settings
        self.config = settings.for_camera(camera)
        self.pipeline = pipeline
        self.spool = spool
        self.texture = texture
        self.counters = counters
        self.cores = cores or threading.Semaphore(1)
        t, m = self.config.tracking, self.config.motion
        self.tracker: Tracker = Tracker(t.interval_s, t.distance, t.ttl_s, t.min_hits, t.max_speed)
        self.motion = MotionGate(MotionSettings(m.enabled, 8, m.threshold, m.min_pixels, hold_s=m.hold_s,
                                                full_frame_fraction=m.full_frame_fraction),
                                 min_face=self.config.detection.min_face_size)
        self._track_seq: dict[str, int] = {}  # tracker's track id -> seq of its first observation (the wire's track)
        self.stop_event = threading.Event()
        self.done = threading.Event()
        self.error: str | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"camera-{self.camera.id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        s = self.settings
        try:
            source = open_source(self.camera.source, self.config.sample_fps, s.loop,
                                 lambda _: self.counters.inc("bad_frames"),
                                 s.reopen_initial_s, s.reopen_max_s)
            log.info("camera %s: reading %s", self.camera.id, self.camera.source)
            for frame in source.frames(self.stop_event):
                if isinstance(frame, Tick):
                    self._emit_all(self.tracker.update([], frame.time_s))
                else:
                    self._frame(frame)
            self._emit_all(self.tracker.flush())
            log.info("camera %s: source %s ended", self.camera.id, self.camera.source)
        except SourceError as e:
            self.error = str(e)
            log.error("camera %s: %s", self.camera.id, e)
            self._emit_all(self.tracker.flush())
        except Exception as e:  # a camera worker never takes the agent down with it
            self.error = f"{type(e).__name__}: {e}"
            log.exception("camera %s: worker failed", self.camera.id)
        finally:
            self.done.set()

    def _frame(self, frame) -> None:
        from facecodec.errors import FaceCodecError

        self.counters.inc("frames")
        clock = self.pipeline.clock
        with self.cores:
            t = time.perf_counter()
            try:
                gray = frame.small_gray(8)
                t = clock.add("motion_decode", t)
                h, w = frame.image.shape[:2] if frame.decoded else (gray.shape[0] * 8, gray.shape[1] * 8)
                regions = self.motion.regions(gray, frame.time_s, (h, w))
                t = clock.add("motion", t)
                if not regions:  # nothing moved: nothing new to find
                    self.counters.inc("frames_still")
                    self._emit_all(self.tracker.update([], frame.time_s, looked=lambda box: False))
                    return
                image = frame.image
                t = clock.add("decode", t)
                faces = self.pipeline.analyze(image, regions)
            except (FaceCodecError, BadFrame) as e:
                self.counters.inc("bad_frames")
                log.warning("camera %s: frame %d skipped: %s", self.camera.id, frame.index, e)
                return
            self.counters.inc("frames_analysed")
            self.counters.inc("faces", len(faces))
            candidates = [Sighting(f.detection.box, f.feature, f.quality.score, frame.time_s,
                                    (f, frame.wall_ms, self._context_picture(image, f.detection.box)))
                          for f in faces]
            t = time.perf_counter()
            emissions = self.tracker.update(candidates, frame.time_s, looked=lambda box: covers(regions, box))
            clock.add("track", t)
        self._emit_all(emissions)

    def _context_picture(self, image, box):
        """The frame around a face, cut and downscaled now (the frame is gone once the track sends its
        best face); coded only for the face that is sent. ``None`` when the context layer is off."""
        from facecodec import context
        from facecodec.errors import FaceCodecError

        c = self.config.context
        if not c.enabled:
            return None
        try:
            return context.cut(image, box, c.scale, c.size)
        except (FaceCodecError, ValueError) as e:
            log.warning("camera %s: no context picture for a face: %s", self.camera.id, e)
            return None

    def _context_payload(self, picture) -> bytes | None:
        from facecodec import context
        from facecodec.errors import FaceCodecError

        if picture is None:
            return None
        t = time.perf_counter()
        try:
            return context.encode(picture, self.config.context.codec, self.config.context.quality)
        except (FaceCodecError, ValueError, OSError) as e:
            log.warning("camera %s: the context picture of a face could not be coded: %s", self.camera.id, e)
            return None
        finally:
            self.pipeline.clock.add("context", t)

    def _emit_all(self, emissions: list[Emission]) -> None:
        for e in emissions:
            self._emit(e)

    def _emit(self, emission: Emission) -> None:
        from facecodec.crop import face_crop
        from facecodec.errors import FaceCodecError

        face, wall_ms, picture = emission.candidate.payload
        t = time.perf_counter()
        try:
            base = self.pipeline.encode_base(face.feature, face.backend)
            self.pipeline.clock.add("encode", t)
        except FaceCodecError as e:
            log.error("camera %s: base layer of a face could not be encoded: %s", self.camera.id, e)
            self.counters.inc("encode_errors")
            return
        try:
            seq = self.spool.allocate()  # the face's id derives from it (facewire.ids)
        except StoreError as e:
            self.counters.inc("store_errors")
            log.error("camera %s: an observation is lost: %s", self.camera.id, e)
            return
        face_id = self.spool.face_id(seq)
        track_seq = self._track_seq.setdefault(emission.track_id, seq)
        data = spooled_face(face, base, wall_ms, track_seq)
        try:
            self.texture.put(face_id, face_crop(face.chip), base, wall_ms, context=self._context_payload(picture))
        except StoreError as e:
            self.counters.inc("store_errors")
            log.error("camera %s: texture of face %s not kept: %s", self.camera.id, face_id, e)
        try:
            dropped = self.spool.put(self.camera.id, face_id, data, seq, V2)
        except StoreError as e:
            self.counters.inc("store_errors")
            log.error("camera %s: observation %s lost: %s", self.camera.id, face_id, e)
            return
        self.counters.inc("observations")
        if dropped:
            self.counters.inc("spool_dropped", len(dropped))
        if len(self._track_seq) > 4 * len(self.tracker.tracks) + 64:  # forget tracks that ended
            live = {t.track_id for t in self.tracker.tracks}
            self._track_seq = {k: v for k, v in self._track_seq.items() if k in live or k == emission.track_id}


class EdgeAgent:
    """Every camera of one agent, their streams, the stores and the status line."""

    def __init__(self, settings: EdgeSettings, pipeline: FacePipeline | None = None):
        if not settings.cameras:
            raise ValueError("no camera configured: give --source and --camera-id (or EDGE_CAMERAS)")
        self.settings = settings
        self.counters = Counters()
        self.spool = Spool(settings.spool_path, int(settings.spool_max_mb * MB), settings.sealer())
        self.texture = TextureStore(settings.texture_path, int(settings.texture_max_mb * MB),
                                    settings.texture_retention_s, settings.sealer())
        from facecodec import runtime

        runtime.set_parallelism(settings.core_budget)
        self.cores = threading.BoundedSemaphore(settings.core_budget)
        self.pipelines = [pipeline or FacePipeline(backend=settings.feature_backend,
                                                   detection=settings.for_camera(c).detection)
                          for c in settings.cameras]
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="enhancement")
        self.workers = [CameraWorker(c, settings, p, self.spool, self.texture, self.counters, self.cores)
                        for c, p in zip(settings.cameras, self.pipelines)]
        self.streams = [CameraStream(StreamConfig.for_camera(settings, c), self.spool, self.texture, self.counters, self.executor)
                        for c in settings.cameras]
        self.stop_requested = threading.Event()
        self.counters.gauge("spooled", lambda: len(self.spool))
        self.counters.gauge("spool_bytes", lambda: self.spool.nbytes)
        self.counters.gauge("spool_state", lambda: self.spool.state)
        self.counters.gauge("spool_errors", lambda: self.spool.errors)
        self.counters.gauge("spool_error", lambda: self.spool.last_error)
        self.counters.gauge("textures", lambda: len(self.texture))
        self.counters.gauge("texture_bytes", lambda: self.texture.nbytes)
        self.counters.gauge("connected", lambda: f"{sum(s.connected for s in self.streams)}/{len(self.streams)}")
        self.counters.gauge("sources_done", lambda: sum(w.done.is_set() for w in self.workers))

    def request_stop(self) -> None:
        """Ask :meth:`run` to shut down (safe from a signal handler)."""
        self.stop_requested.set()

    def status(self) -> dict[str, object]:
        return self.counters.snapshot()

    def _report(self) -> None:
        snap = self.status()
        log.info(status_line(snap))
        if self.settings.status_file is not None:
            try:
                write_status_file(self.settings.status_file, snap)
            except OSError as e:
                log.warning("cannot write the status file %s: %s", self.settings.status_file, e)

    def _finished(self) -> bool:
        return all(w.done.is_set() for w in self.workers) and len(self.spool) == 0

    def run(self) -> int:
        """Run until :meth:`request_stop` (or, with ``exit_when_done``, until all is sent). Exit code."""
        s = self.settings
        log.info("edge agent: %d camera(s) -> %s, data in %s", len(self.workers), s.server, s.data_dir)
        if len(self.spool):
            log.info("edge agent: %d observations from an earlier run are spooled and will be replayed", len(self.spool))
        for st in self.streams:
            st.start()
        try:
            self.pipelines[0].warm_up()  # compiles the shared networks once, before the cameras need them
        except Exception as e:  # noqa: BLE001 - the workers report model problems frame by frame
            log.error("edge agent: the networks could not be loaded: %s", e)
        for w in self.workers:
            w.start()
        next_report = time.monotonic() + s.status_interval_s
        try:
            while not self.stop_requested.is_set():
                if s.exit_when_done and self._finished():
                    log.info("edge agent: every source has ended and every observation is acknowledged")
                    break
                if time.monotonic() >= next_report:
                    next_report += s.status_interval_s
                    _trim_heap()
                    try:
                        self.texture.sweep()
                    except StoreError as e:
                        self.counters.inc("store_errors")
                        log.error("%s", e)
                    self._report()
                self.stop_requested.wait(0.2)
        finally:
            self.shutdown()
        failed = [w for w in self.workers if w.error]
        return 1 if failed and len(failed) == len(self.workers) else 0

    def shutdown(self) -> None:
        """Stop the sources (their last tracks are spooled), wait a while for acks, close everything."""
        log.info("edge agent: stopping")
        for w in self.workers:
            w.stop_event.set()
        for w in self.workers:
            w.stop(timeout=30)
        deadline = time.monotonic() + self.settings.drain_timeout_s
        gen = self.spool.generation
        while len(self.spool) and time.monotonic() < deadline and any(st.connected for st in self.streams):
            gen = self.spool.wait_for_change(gen, max(0.0, min(0.5, deadline - time.monotonic())))
        for st in self.streams:
            st.stop()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self._report()
        if len(self.spool):
            log.info("edge agent: %d observations stay spooled for the next run", len(self.spool))
        self.spool.close()
        self.texture.close()


def _trim_heap() -> None:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim``): frames come and go in
    megabytes, and freed memory otherwise stays resident. No-op off glibc."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def open_agent(settings: EdgeSettings, stop: threading.Event, first_delay_s: float = 1.0,
               max_delay_s: float = 60.0) -> EdgeAgent | None:
    """The agent, once its data folder can be opened; ``None`` if ``stop`` is set first.

    A data folder that cannot be opened (disk full, read-only, not a folder) is retried with a
    doubling delay instead of exiting: a supervisor that restarts a failed process would
    otherwise start the agent (and load its models) again and again. Meanwhile the status file
    says why (``spool_state``, ``spool_error``, ``store_errors``) and shows no stream connected,
    so the container's health check fails.
    """
    from edge_agent.errors import StoreFullError, StoreUnwritableError

    delay, failures = first_delay_s, 0
    while not stop.is_set():
        try:
            return EdgeAgent(settings)
        except StoreError as e:
            failures += 1
            state = ("full" if isinstance(e, StoreFullError) else
                     "unwritable" if isinstance(e, StoreUnwritableError) else "error")
            log.error("edge agent: %s; retrying in %.0f s (the cameras are read once the data folder %s "
                      "can be written)", e, delay, settings.data_dir)
            if settings.status_file is not None:
                snap = {**Counters().snapshot(), "store_errors": failures, "spool_state": state, "spool_error": str(e),
                        "connected": f"0/{len(settings.cameras)}", "waiting_for_data_dir": True}
                try:
                    write_status_file(settings.status_file, snap)
                except OSError as err:
                    log.warning("cannot write the status file %s: %s", settings.status_file, err)
            stop.wait(delay)
            delay = min(delay * 2, max_delay_s)
        except EdgeAgentError as e:
            log.error("%s", e)
            return None
    return None
