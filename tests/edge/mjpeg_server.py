"""A tiny MJPEG-over-HTTP camera for tests: ``python mjpeg_server.py PORT IMAGE...``.

Serves ``multipart/x-mixed-replace`` JPEG frames (what IP cameras serve) at 10 frames per
second, cycling through the given images, until killed.
"""

from __future__ import annotations

import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    port = int(sys.argv[1])
    frames = [Path(p).read_bytes() for p in sys.argv[2:]]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            i = 0
            try:
                while True:
                    f = frames[i % len(frames)]
                    i += 1
                    head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(f)
                    self.wfile.write(head + f + b"\r\n")
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("serving", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
