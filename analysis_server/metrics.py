"""Prometheus metrics of one server instance (own registry, so tests can run several servers)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REJECTION_FIELDS = ("face_id", "camera_id", "capture_time_ms", "box", "quality.probability", "quality.face_size",
                    "track_id", "base_layer", "format_version", "feature_backend", "batch")


class Metrics:
    """Counters for ingest, matching, enhancement round trips and image requests."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.observations = Counter("faceserver_observations", "Observations received, by outcome",
                                    ["outcome"], registry=r)
        self.rejections = Counter("faceserver_rejections", "Rejected observations, by offending field",
                                  ["field"], registry=r)
        self.batch_seconds = Histogram("faceserver_batch_seconds", "Time from receiving a batch to sending its ack",
                                       buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
                                       registry=r)
        self.streams = Gauge("faceserver_streams_open", "Open camera streams", registry=r)
        self.watchlist_hits = Counter("faceserver_watchlist_hits", "Observations matched to a watchlist identity",
                                      registry=r)
        self.enhancement = Counter("faceserver_enhancement_requests", "Enhancement layers asked of the edge, by outcome",
                                   ["outcome"], registry=r)
        self.images = Counter("faceserver_image_requests", "Face image requests, by layer and HTTP status",
                              ["layer", "status"], registry=r)
        self.auth_failures = Counter("faceserver_auth_failures", "Refused credentials, by interface", ["interface"],
                                     registry=r)
        self.gallery_size = Gauge("faceserver_gallery_features", "Enrolled features in the gallery index", registry=r)
        self.searches = Histogram("faceserver_search_seconds", "Retrospective search time", registry=r)
        # the retrospective search index of this replica (0 without one): set by Services
        self.index_faces = Gauge("faceserver_search_index_faces", "Faces in this replica's search index", registry=r)
        self.index_rows = Gauge("faceserver_search_index_rows",
                                "Rows of the search index's day partitions, removed ones included", registry=r)
        self.index_bytes = Gauge("faceserver_search_index_bytes",
                                 "Memory of the search index's codes and rows", registry=r)
        self.index_waiting = Gauge("faceserver_search_index_waiting",
                                   "Faces stored by this replica whose change-log entry the index has not read yet",
                                   registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def rejected(self, field: str) -> None:
        self.observations.labels("rejected").inc()
        self.rejections.labels(field if field in REJECTION_FIELDS else "other").inc()
