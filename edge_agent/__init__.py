"""The edge agent: cameras -> faces -> base layers streamed to the analysis server, texture kept
at the edge until asked for (see README.md beside this file).

``sources`` (OpenCV frames), ``pipeline`` (front end + base layer), ``tracker`` (one observation
per track per interval), ``texture`` (bounded store of face crops), ``spool`` (unacknowledged
observations on disk), ``client`` (one gRPC stream per camera), ``agent`` (wires them per
camera), ``settings`` and
``__main__`` (the ``edge-agent`` command).
"""
