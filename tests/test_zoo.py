"""The model registry: training commands add files named by their hash, with stable tags."""

from __future__ import annotations

import pytest

from facecodec import zoo


@pytest.fixture
def empty_registry(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "PACKAGE_MODEL_DIR", tmp_path)
    monkeypatch.setattr(zoo, "MANIFEST", tmp_path / "manifest.json")
    zoo._entries.cache_clear()
    yield tmp_path
    zoo._entries.cache_clear()


def test_added_models_get_hash_names_and_distinct_nonzero_tags(empty_registry):
    a = zoo.add(b"first", "recon-x", ".pt", "reconstruction", "{name}.md")
    b = zoo.add(b"second", "recon-x", ".pt", "reconstruction", "{name}.md")
    assert a.name.startswith("recon-x-") and (empty_registry / a.file).read_bytes() == b"first"
    assert a.card == f"{a.name}.md" and zoo.model_path(a.name) == empty_registry / a.file
    assert 0 not in (a.tag, b.tag) and a.tag != b.tag


def test_registering_the_same_bytes_again_keeps_the_tag_payloads_name(empty_registry):
    a = zoo.add(b"weights", "recon-x", ".pt", "reconstruction")
    zoo.add(b"other", "recon-x", ".pt", "reconstruction")
    assert zoo.add(b"weights", "recon-x", ".pt", "reconstruction").tag == a.tag
    assert len(zoo.entries("reconstruction")) == 2


def test_a_preferred_tag_is_used_only_when_free(empty_registry):
    a = zoo.add(b"one", "base-x", ".npz", "base-layer", preferred_tag=7, backend="dlib-resnet-128")
    b = zoo.add(b"two", "base-x", ".npz", "base-layer", preferred_tag=7, backend="dlib-resnet-128")
    assert a.tag == 7 and b.tag not in (0, 7)
