"""Frame sources: sampling, bad frames skipped, files that end, live streams that disappear."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest
from edge_testkit import FACES, make_video, start_mjpeg_camera

from edge_agent.errors import SourceError
from edge_agent.sources import (
    Backoff,
    ImageFolderSource,
    LiveSource,
    MjpegSource,
    Tick,
    VideoFileSource,
    open_source,
)
from testkit.processes import free_port, wait_until


def collect(source, limit: int = 1000):
    stop = threading.Event()
    out = []
    for f in source.frames(stop):
        out.append(f)
        if len(out) >= limit:
            stop.set()
    return out


def test_open_source_picks_the_kind(tmp_path, short_video):
    assert isinstance(open_source(str(short_video), 2), VideoFileSource)
    assert isinstance(open_source(str(tmp_path), 2), ImageFolderSource)
    assert isinstance(open_source("rtsp://127.0.0.1:1/x", 2), LiveSource)
    assert isinstance(open_source("0", 2), LiveSource)
    with pytest.raises(SourceError, match="does not exist"):
        open_source(str(tmp_path / "missing.avi"), 2)


def test_video_is_sampled_on_media_time(short_video):
    frames = collect(VideoFileSource(str(short_video), sample_fps=2.0))  # 6 s of video at 10 fps
    assert len(frames) == 12
    assert [round(f.time_s, 2) for f in frames[:3]] == [0.0, 0.5, 1.0]
    assert frames[0].image.shape == (360, 640, 3) and frames[0].image.dtype == np.uint8
    # RGB, not OpenCV's BGR: the pasted LFW photo's pixels match a PIL (RGB) read
    from facecodec.images import load_rgb

    photo = load_rgb(FACES / "Ashanti" / "Ashanti_0001.jpg")
    patch = frames[0].image[55 + 100 : 55 + 150, 100 + 100 : 100 + 150].astype(int)
    assert np.abs(patch - photo[100:150, 100:150].astype(int)).mean() < 12


def test_looping_a_file_keeps_media_time_increasing(short_video):
    frames = collect(VideoFileSource(str(short_video), sample_fps=2.0, loop=True), limit=25)
    times = [f.time_s for f in frames]
    assert len(frames) == 25 and all(b > a for a, b in zip(times, times[1:]))


def test_folder_skips_unreadable_images(tmp_path):
    for i, p in enumerate(sorted(FACES.glob("Ashanti/*.jpg"))):
        shutil.copy(p, tmp_path / f"{i:02d}.jpg")
    (tmp_path / "01b.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (tmp_path / "notes.txt").write_text("ignored")
    bad = []
    frames = collect(ImageFolderSource(str(tmp_path), 1.0, on_bad_frame=bad.append))
    assert len(frames) == 4 and len(bad) == 1
    assert [f.time_s for f in frames] == [0.0, 1.0, 2.0, 3.0]


def test_corrupt_and_truncated_videos_end_without_raising(tmp_path, short_video):
    data = bytearray(short_video.read_bytes())
    rng = np.random.default_rng(0)
    for start in (len(data) // 3, len(data) // 2):
        data[start : start + 4000] = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    corrupt = tmp_path / "corrupt.avi"
    corrupt.write_bytes(bytes(data))
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(short_video.read_bytes()[: len(data) // 2])
    for path in (corrupt, truncated):
        frames = collect(VideoFileSource(str(path), sample_fps=5.0))
        assert 0 < len(frames) <= 30  # 6 s at 5 frames per second
        assert all(f.image.shape == (360, 640, 3) for f in frames)


def test_not_a_video_ends_with_a_source_error(tmp_path):
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(SourceError, match="cannot open"):
        collect(VideoFileSource(str(junk), 2.0))


def test_backoff_grows_with_jitter_and_resets():
    import random

    b = Backoff(0.5, 8.0, random.Random(1))
    delays = [b.next_delay() for _ in range(8)]
    for n, d in enumerate(delays):
        cap = min(8.0, 0.5 * 2**n)
        assert cap / 2 <= d <= cap
    assert len(set(delays)) == len(delays)
    b.reset()
    assert b.next_delay() <= 0.5


@pytest.mark.slow
@pytest.mark.parametrize("source_class", ["LiveSource", "MjpegSource"])
def test_live_stream_that_disappears_is_reopened(tmp_path, source_class):
    port = free_port()
    images = sorted(FACES.glob("*/*_0001.jpg"))[:3]
    cam = start_mjpeg_camera(port, images)
    states = []
    cls = {"LiveSource": LiveSource, "MjpegSource": MjpegSource}[source_class]
    src = cls(f"http://127.0.0.1:{port}/stream.mjpg", sample_fps=5.0, reopen_initial_s=0.2,
              reopen_max_s=0.5, on_state=states.append)
    stop = threading.Event()
    frames, ticks = [], []

    def consume():
        for f in src.frames(stop):
            if isinstance(f, Tick):
                ticks.append(f)
            else:
                frames.append(f)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    try:
        wait_until(lambda: len(frames) >= 5, what="first frames")
        cam.kill()
        cam.wait()
        wait_until(lambda: "down" in states, what="the source to be noticed down")
        n = len(frames)
        time.sleep(1.0)
        assert len(frames) <= n + 1 and t.is_alive()  # no frames, but the source has not ended
        assert ticks and ticks[-1].time_s > frames[-1].time_s  # the tracker still hears the clock
        cam = start_mjpeg_camera(port, images)
        wait_until(lambda: len(frames) >= n + 5, timeout=20, what="frames after the camera came back")
        assert states.count("up") >= 2
    finally:
        stop.set()
        cam.kill()
        cam.wait()
        t.join(5)
    assert not t.is_alive()
    rate = 5 / (frames[-1].time_s - frames[-6].time_s)
    assert rate < 6.5  # sampled at about sample_fps, not the camera's 10 fps


@pytest.mark.slow
def test_an_mjpeg_camera_is_split_into_jpeg_frames_decoded_only_when_asked():
    """The MJPEG reader never decodes: a frame holds the camera's JPEG bytes; the motion gate's 1/8-size
    grey picture and the full pixels are decoded from them on demand, and agree with OpenCV's decode."""
    import cv2

    port = free_port()
    image = sorted(FACES.glob("*/*_0001.jpg"))[0]
    cam = start_mjpeg_camera(port, [image])
    src = open_source(f"http://127.0.0.1:{port}/video.mjpg", 5.0)
    stop = threading.Event()
    try:
        assert isinstance(src, MjpegSource)
        frame = next(f for f in src.frames(stop) if not isinstance(f, Tick))
        assert frame.jpeg == image.read_bytes()
        small = frame.small_gray(8)  # the sampler checked it decodes: the small picture is already there
        assert small.shape == (32, 32) and not frame.decoded
        full = frame.image
        assert frame.decoded and np.array_equal(full, cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB))
    finally:
        stop.set()
        cam.kill()
        cam.wait()


def test_an_http_url_that_is_not_mjpeg_is_read_by_opencv(tmp_path):
    """A URL answering a single image (no multipart) is handed to OpenCV's reader, which opens files too."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    video = (tmp_path / "v.avi")
    make_video(video, ["Ashanti"], 0.5, 10.0)
    data = video.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "video/x-msvideo")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    states = []
    src = open_source(f"http://127.0.0.1:{httpd.server_address[1]}/v.avi", 5.0, on_state=states.append)
    stop = threading.Event()
    try:
        frame = next(f for f in src.frames(stop) if not isinstance(f, Tick))
        assert frame.decoded and frame.image.shape == (360, 640, 3)
    finally:
        stop.set()
        httpd.shutdown()
