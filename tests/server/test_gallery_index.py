"""The 1:N gallery index: exact numpy scan, FAISS beyond ``exact_max``, adds and removals."""

from __future__ import annotations

import numpy as np
import pytest

from analysis_server.gallery_index import EXACT, IVF, GalleryIndex
from facecodec.verification import pair_distances


def _gallery(n: int, seed: int = 0) -> np.ndarray:
    """Identities spread like face features (norm about 1.4, 128-D)."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 128)) * 0.125).astype(np.float32)


def test_exact_search_returns_the_nearest_rows_with_facecodec_distances():
    g = _gallery(500)
    index = GalleryIndex(exact_max=1000)
    index.add([f"id{i}/f" for i in range(500)], g)
    probes = g[[3, 77, 411]] + np.float32(0.01)
    hits = index.search(probes, k=3)
    assert index.kind == EXACT and [h[0].key for h in hits] == ["id3/f", "id77/f", "id411/f"]
    for p, row in zip(probes, hits):
        brute = pair_distances(np.repeat(p[None], 500, 0), g)
        assert [h.key for h in row] == [f"id{i}/f" for i in np.argsort(brute)[:3]]
        assert [h.distance for h in row] == pytest.approx(np.sort(brute)[:3], rel=1e-5)


def test_faiss_index_takes_over_beyond_exact_max_and_agrees_with_exact_search():
    g = _gallery(20_000, seed=1)
    index = GalleryIndex(exact_max=5_000, nprobe=16)
    index.add([f"id{i}/f" for i in range(20_000)], g)
    assert index.kind == IVF
    rng = np.random.default_rng(2)
    picks = rng.choice(20_000, 200, replace=False)
    probes = g[picks] + (rng.normal(size=(200, 128)) * 0.03).astype(np.float32)
    approx = [h[0].key for h in index.search(probes, 1)]
    exact = [h[0].key for h in index.search(probes, 1, exact=True)]
    recall = np.mean([a == e for a, e in zip(approx, exact)])
    assert recall >= 0.99 and exact == [f"id{i}/f" for i in picks]


def test_removed_rows_are_never_returned_and_the_index_shrinks_back_to_exact():
    g = _gallery(6_000, seed=3)
    index = GalleryIndex(exact_max=5_000)
    keys = [f"id{i}/f" for i in range(6_000)]
    index.add(keys, g)
    assert index.kind == IVF
    assert index.remove(["id10/f", "id20/f", "missing/f"]) == 2
    assert all(h[0].key not in ("id10/f", "id20/f") for h in index.search(g[[10, 20]], 1))
    index.remove(keys[:2_000])
    assert index.kind == EXACT and len(index) == 4_000
    assert index.search(g[5_999], 1)[0][0].key == "id5999/f"


def test_adding_an_existing_key_replaces_its_vector():
    g = _gallery(10)
    index = GalleryIndex()
    index.add(["a/1"], g[0])
    index.add(["a/1"], g[5])
    assert len(index) == 1 and index.search(g[5], 1)[0][0].distance == pytest.approx(0.0, abs=1e-5)


def test_searches_go_on_while_the_faiss_index_is_trained():
    import threading

    g = _gallery(30_000, seed=4)
    index = GalleryIndex(exact_max=10_000)
    index.add([f"id{i}/f" for i in range(5_000)], g[:5_000])
    errors, answers = [], []
    stop = threading.Event()

    def search_loop():
        while not stop.is_set():
            try:
                answers.append(index.search(g[7], 1)[0][0].key)
            except Exception as e:  # any failure fails the test below
                errors.append(e)

    t = threading.Thread(target=search_loop)
    t.start()
    index.add([f"id{i}/f" for i in range(5_000, 30_000)], g[5_000:])
    stop.set()
    t.join()
    assert index.kind == IVF and not errors and set(answers) == {"id7/f"}
    assert index.search(g[29_999], 1)[0][0].key == "id29999/f"
