"""The test kit: the processes and helpers that tests, benchmarks and the demo share.

- :mod:`testkit.processes`: real processes on loopback (a Redis server or a Redis Cluster, the
  analysis server, edge agents, simulated cameras), the one way each is started, and the small
  helpers every caller needs (``free_port``, ``wait_until``, ``clean_env``).
- :mod:`testkit.camera`: the one simulated MJPEG camera (the demo's cameras, the compose stack's
  ``camera`` service, and ``python -m testkit.camera`` for the tests and benchmarks).

Tests depend on it; it depends on no test, and on no benchmark: ``bench/`` and ``demo/`` use it
as the tests do.
"""
