"""Frame sources: video files, folders of images, MJPEG over HTTP, RTSP/HTTP streams, local cameras.

Every source yields frames at no more than ``sample_fps``. A frame that arrives as a JPEG (an MJPEG
camera, a folder of JPEG files) is decoded only when something asks for its pixels: the motion gate
looks at it decoded at 1/8 size in grey (libjpeg scales in the DCT domain, a few times cheaper than a
full decode), so an unchanged scene is never decoded in full. MJPEG cameras (``http(s)://`` URLs that
answer ``multipart/x-mixed-replace``) are read by :class:`MjpegSource`, which only splits the stream into
JPEG parts; other URLs and camera indexes go through OpenCV, which decodes every frame. Files and folders are read as
fast as the pipeline takes them and sampled on media time (a folder's images are spaced
``1 / sample_fps`` apart), so the same file always gives the same frames. Live sources
(URLs, camera indexes) are read by a thread that keeps only the newest frame and are sampled
on the wall clock; when one stops delivering it is reopened with exponential backoff and
the generator goes on, so a camera that disappears for a while never ends its worker.

Bad frames (an unreadable image in a folder, a frame OpenCV cannot decode) are counted and
skipped.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.errors import SourceError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
MAX_BAD_FRAMES_IN_A_ROW = 50
OPEN_TIMEOUT_MS = 10_000
READ_TIMEOUT_MS = 10_000
MAX_JPEG_BYTES = 16 * 1024 * 1024  # one MJPEG part (a 4K frame at high quality is about 2 MB)


class BadFrame(SourceError):
    """A frame's bytes do not decode to an image."""


class Frame:
    """One sampled frame. ``time_s`` is media time (files) or seconds since the source opened
    (live); ``wall_ms`` is when the agent read it (Unix epoch, ms). Either decoded pixels (``image``,
    RGB) or the JPEG they come from (``jpeg``), decoded on first use (:class:`BadFrame` if they do not)."""

    __slots__ = ("index", "time_s", "wall_ms", "_image", "jpeg", "_gray")

    def __init__(self, index: int, time_s: float, wall_ms: int, image: np.ndarray | None = None,
                 jpeg: bytes | None = None):
        if image is None and jpeg is None:
            raise ValueError("a frame has pixels or a JPEG")
        self.index, self.time_s, self.wall_ms = index, time_s, wall_ms
        self._image, self.jpeg, self._gray = image, jpeg, {}

    def __repr__(self) -> str:
        return f"Frame(index={self.index}, time_s={self.time_s:.3f}, {'jpeg' if self._image is None else 'decoded'})"

    @property
    def decoded(self) -> bool:
        return self._image is not None

    @property
    def image(self) -> np.ndarray:
        """The RGB pixels (decoded once)."""
        if self._image is None:
            import cv2

            bgr = cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None or bgr.size == 0:
                raise BadFrame(f"frame {self.index} does not decode")
            self._image = _bgr_to_rgb(bgr)
        return self._image

    def small_gray(self, factor: int = 8) -> np.ndarray:
        """The frame in grey, ``factor`` (1, 2, 4 or 8) times smaller per side (sides rounded up)."""
        if factor not in self._gray:
            import cv2

            if self._image is None:
                flag = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                        8: cv2.IMREAD_REDUCED_GRAYSCALE_8}[factor]
                gray = cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), flag)
                if gray is None or gray.size == 0:
                    raise BadFrame(f"frame {self.index} does not decode")
            else:
                h, w = self._image.shape[:2]
                gray = cv2.cvtColor(self._image, cv2.COLOR_RGB2GRAY)
                if factor > 1:
                    gray = cv2.resize(gray, (-(-w // factor), -(-h // factor)), interpolation=cv2.INTER_AREA)
            self._gray[factor] = gray
        return self._gray[factor]


@dataclass(frozen=True)
class Tick:
    """No new frame from a live source for a while: lets the tracker end tracks on time."""

    time_s: float


BadFrameHook = Callable[[str], None]
TICK_S = 0.5


def _bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    import cv2

    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _now_ms() -> int:
    return int(time.time() * 1000)


class FrameSource:
    """Base class: ``frames(stop)`` yields sampled frames until the source ends or ``stop`` is set
    (live sources also yield a :class:`Tick` every half second without frames)."""

    live = False

    def __init__(self, spec: str, sample_fps: float, on_bad_frame: BadFrameHook | None = None):
        self.spec = spec
        self.sample_fps = sample_fps
        self.period = 1.0 / sample_fps
        self._on_bad = on_bad_frame or (lambda reason: None)

    def bad_frame(self, reason: str) -> None:
        log.warning("source %s: bad frame skipped (%s)", self.spec, reason)
        self._on_bad(reason)

    def checked(self, frame: Frame, what: str) -> bool:
        """Whether a JPEG frame decodes (at the motion gate's 1/8 size, kept for it); counted as bad if not."""
        try:
            frame.small_gray(8)
            return True
        except BadFrame:
            self.bad_frame(f"{what} does not decode")
            return False

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        raise NotImplementedError


class ImageFolderSource(FrameSource):
    """The images of a folder in name order, one frame each, ``1 / sample_fps`` apart."""

    def __init__(self, spec: str, sample_fps: float, on_bad_frame: BadFrameHook | None = None, loop: bool = False):
        super().__init__(spec, sample_fps, on_bad_frame)
        self.folder = Path(spec)
        self.loop = loop
        if not self.folder.is_dir():
            raise SourceError(f"{spec} is not a folder")

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        import cv2

        index = 0
        while not stop.is_set():
            files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                log.warning("source %s: no images", self.spec)
            for path in files:
                if stop.is_set():
                    return
                if path.suffix.lower() in (".jpg", ".jpeg"):
                    try:
                        data = path.read_bytes()
                    except OSError as e:
                        self.bad_frame(f"cannot read {path.name}: {e.strerror}")
                        continue
                    frame = Frame(index, index * self.period, _now_ms(), jpeg=data)
                    if not self.checked(frame, path.name):
                        continue
                    yield frame
                    index += 1
                    continue
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if image is None or image.size == 0:
                    self.bad_frame(f"cannot decode {path.name}")
                    continue
                yield Frame(index, index * self.period, _now_ms(), _bgr_to_rgb(image))
                index += 1
            if not self.loop:
                return


class VideoFileSource(FrameSource):
    """A video file, sampled on its own timestamps."""

    def __init__(self, spec: str, sample_fps: float, on_bad_frame: BadFrameHook | None = None, loop: bool = False):
        super().__init__(spec, sample_fps, on_bad_frame)
        self.loop = loop
        if not Path(spec).is_file():
            raise SourceError(f"video file {spec} does not exist")

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        import cv2

        index, offset = 0, 0.0
        while not stop.is_set():
            cap = cv2.VideoCapture(self.spec)
            if not cap.isOpened():
                raise SourceError(f"OpenCV cannot open {self.spec}")
            try:
                fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
                count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
                n, due, last_t, bad = 0, 0.0, 0.0, 0
                while not stop.is_set():
                    ok = cap.grab()
                    if not ok:
                        # A frame that cannot be demuxed ends OpenCV's reading in most builds; past
                        # the frame count it is the end, before it we try a few more.
                        bad += 1
                        if count and n < count - 1 and bad <= MAX_BAD_FRAMES_IN_A_ROW:
                            self.bad_frame(f"frame {n} of {count} cannot be read")
                            n += 1
                            continue
                        break
                    t = n / fps if fps > 0 else cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                    n += 1
                    if t + 1e-6 < due:
                        continue
                    ok, image = cap.retrieve()
                    if not ok or image is None or image.size == 0:
                        bad += 1
                        self.bad_frame(f"frame {n - 1} cannot be decoded")
                        if bad > MAX_BAD_FRAMES_IN_A_ROW:
                            break
                        continue
                    bad = 0
                    due = t + self.period
                    last_t = t
                    yield Frame(index, offset + t, _now_ms(), _bgr_to_rgb(image))
                    index += 1
            finally:
                cap.release()
            if not self.loop:
                return
            offset += last_t + self.period


class Backoff:
    """Exponential backoff with jitter: the n-th delay is drawn in [d/2, d], d = min(max, initial * 2**n)."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None):
        self.initial_s, self.max_s = initial_s, max_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        d = min(self.max_s, self.initial_s * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return d / 2 + self._rng.uniform(0, d / 2)

    def reset(self) -> None:
        self.attempt = 0


class LiveSource(FrameSource):
    """An RTSP/HTTP URL or a local camera index. A reader thread keeps the newest frame;
    the generator hands one out every ``1 / sample_fps`` seconds. Lost streams are reopened."""

    live = True

    def __init__(self, spec: str, sample_fps: float, on_bad_frame: BadFrameHook | None = None,
                 reopen_initial_s: float = 1.0, reopen_max_s: float = 30.0,
                 on_state: Callable[[str], None] | None = None):
        super().__init__(spec, sample_fps, on_bad_frame)
        self.reopen_initial_s, self.reopen_max_s = reopen_initial_s, reopen_max_s
        self._on_state = on_state or (lambda state: None)
        self._latest: tuple[int, np.ndarray | bytes] | None = None  # BGR pixels, or a JPEG
        self._cond = threading.Condition()
        self._seq = 0

    def _open(self):
        import cv2

        if self.spec.isdigit():
            return cv2.VideoCapture(int(self.spec))
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS]
        return cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG, params)

    def _publish(self, payload: np.ndarray | bytes) -> None:
        with self._cond:
            self._seq += 1
            self._latest = (self._seq, payload)
            self._cond.notify_all()

    def _reader(self, stop: threading.Event) -> None:
        backoff = Backoff(self.reopen_initial_s, self.reopen_max_s)
        while not stop.is_set():
            cap = self._open()
            if not cap.isOpened():
                cap.release()
                delay = backoff.next_delay()
                log.warning("source %s: cannot open, retrying in %.1f s", self.spec, delay)
                self._on_state("down")
                stop.wait(delay)
                continue
            log.info("source %s: opened", self.spec)
            self._on_state("up")
            bad = 0
            try:
                while not stop.is_set():
                    ok, image = cap.read()
                    if not ok or image is None or image.size == 0:
                        bad += 1
                        if bad > MAX_BAD_FRAMES_IN_A_ROW or not ok:
                            break
                        self.bad_frame("frame cannot be decoded")
                        continue
                    if bad == 0:
                        backoff.reset()
                    bad = 0
                    self._publish(image)
            finally:
                cap.release()
            if stop.is_set():
                return
            delay = backoff.next_delay()
            log.warning("source %s: stream lost, reopening in %.1f s", self.spec, delay)
            self._on_state("down")
            stop.wait(delay)

    def frames(self, stop: threading.Event) -> Iterator[Frame | Tick]:
        reader_stop = threading.Event()  # the reader lives exactly as long as this generator
        reader = threading.Thread(target=self._reader, args=(reader_stop,), name=f"source-{self.spec}", daemon=True)
        reader.start()
        try:
            yield from self._sample(stop)
        finally:
            # The reader may be inside OpenCV's blocking read; a process that exits under it
            # aborts ("exception not rethrown"), so wait for that read to return or time out.
            reader_stop.set()
            reader.join(READ_TIMEOUT_MS / 1000 + 2)

    def _sample(self, stop: threading.Event) -> Iterator[Frame | Tick]:
        start = time.monotonic()
        seen, index, due = 0, 0, start
        while not stop.is_set():
            with self._cond:
                waited = time.monotonic()
                while not stop.is_set() and (self._latest is None or self._latest[0] == seen):
                    self._cond.wait(TICK_S)
                    if time.monotonic() - waited >= TICK_S:
                        break
                if stop.is_set():
                    break
                if self._latest is None or self._latest[0] == seen:
                    tick = Tick(time.monotonic() - start)
                else:
                    tick = None
                    seen, image = self._latest
            if tick is not None:
                yield tick
                continue
            now = time.monotonic()
            if isinstance(image, bytes):
                frame = Frame(index, now - start, _now_ms(), jpeg=image)
                if self.checked(frame, f"frame {index}"):
                    yield frame
            else:
                yield Frame(index, now - start, _now_ms(), _bgr_to_rgb(image))
            index += 1
            due = max(due + self.period, now)
            stop.wait(max(0.0, due - time.monotonic()))


class NotMjpeg(Exception):
    """The URL does not answer with a multipart stream of JPEG parts."""


class MjpegSource(LiveSource):
    """An MJPEG camera over HTTP (``multipart/x-mixed-replace``): the stream is split into its JPEG
    parts, none decoded here (see :class:`Frame`). A URL that answers anything else is read by
    OpenCV instead, as :class:`LiveSource` reads it."""

    def _reader(self, stop: threading.Event) -> None:
        backoff = Backoff(self.reopen_initial_s, self.reopen_max_s)
        while not stop.is_set():
            try:
                self._read_stream(stop, backoff)
            except NotMjpeg as e:
                log.info("source %s: %s; reading it with OpenCV", self.spec, e)
                return LiveSource._reader(self, stop)
            except (OSError, ValueError) as e:
                if stop.is_set():
                    return
                delay = backoff.next_delay()
                log.warning("source %s: %s; reopening in %.1f s", self.spec, e, delay)
                self._on_state("down")
                stop.wait(delay)

    def _read_stream(self, stop: threading.Event, backoff: Backoff) -> None:
        import urllib.request

        with urllib.request.urlopen(self.spec, timeout=READ_TIMEOUT_MS / 1000) as r:
            kind = r.headers.get("Content-Type", "")
            if not kind.startswith("multipart/"):
                raise NotMjpeg(f"answers {kind or 'no content type'}")
            log.info("source %s: opened (MJPEG)", self.spec)
            self._on_state("up")
            bad = 0
            while not stop.is_set():
                headers = {}
                line = r.readline(1024)
                while line in (b"\r\n", b"\n"):  # the CRLF that ends the previous part
                    line = r.readline(1024)
                if not line:
                    raise OSError("the stream ended")
                if not line.startswith(b"--"):
                    raise ValueError(f"expected a part boundary, got {line[:40]!r}")
                while True:
                    line = r.readline(1024)
                    if not line:
                        raise OSError("the stream ended")
                    if line in (b"\r\n", b"\n"):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "-1"))
                if not 0 < length <= MAX_JPEG_BYTES:
                    raise ValueError(f"part of {length} bytes (parts need a Content-Length up to {MAX_JPEG_BYTES})")
                data = r.read(length)
                if len(data) < length:
                    raise OSError("the stream ended inside a part")
                if data[:2] != b"\xff\xd8":
                    bad += 1
                    self.bad_frame("part is not a JPEG")
                    if bad > MAX_BAD_FRAMES_IN_A_ROW:
                        raise ValueError("too many parts that are not JPEGs")
                    continue
                bad = 0
                backoff.reset()  # a part that does not decode is counted when it is sampled
                self._publish(data)


def open_source(spec: str, sample_fps: float, loop: bool = False, on_bad_frame: BadFrameHook | None = None,
                reopen_initial_s: float = 1.0, reopen_max_s: float = 30.0,
                on_state: Callable[[str], None] | None = None) -> FrameSource:
    """The source ``spec`` names: a camera index (``0``), a URL (``rtsp://...``, ``http://...``),
    a folder of images or a video file. HTTP URLs are read as MJPEG when they answer with parts."""
    if spec.startswith(("http://", "https://")):
        return MjpegSource(spec, sample_fps, on_bad_frame, reopen_initial_s, reopen_max_s, on_state)
    if spec.isdigit() or "://" in spec and not spec.startswith("file://"):
        return LiveSource(spec, sample_fps, on_bad_frame, reopen_initial_s, reopen_max_s, on_state)
    path = spec.removeprefix("file://")
    if Path(path).is_dir():
        return ImageFolderSource(path, sample_fps, on_bad_frame, loop)
    return VideoFileSource(path, sample_fps, on_bad_frame, loop)
