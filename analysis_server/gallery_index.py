"""In-memory 1:N index over enrolled features: exact with numpy, approximate with FAISS beyond a size.

Distances are Euclidean on decoded features, as in :mod:`facecodec.verification` (dlib's metric).
Up to ``exact_max`` rows every query is an exact brute-force scan (one BLAS matrix product);
beyond, an inverted-file index (FAISS ``IndexIVFFlat``, ``nlist`` cells, ``nprobe`` probed) keeps
a query well under the 5 ms budget at 1e6 rows; ``bench/search.py`` measures its recall@1
against the exact scan. The numpy copy of every vector is kept either way: it is the source
the FAISS index is (re)trained from, and what exact re-ranking would use.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

EXACT = "numpy-exact"
IVF = "faiss-ivf-flat"


@dataclass(frozen=True)
class Hit:
    """One nearest row: its key (``identity_id/feature_id``) and Euclidean distance."""

    key: str
    distance: float


def auto_nlist(n: int) -> int:
    """About sqrt(n) inverted lists (at least 39 training points each): training stays in seconds
    on one core, and ``nprobe`` lists hold about ``nprobe * sqrt(n)`` rows to scan per query."""
    return int(max(1, min(65536, math.sqrt(max(n, 1)), n // 39)))


class GalleryIndex:
    """Rows of ``dim`` float32 features, each under a string key; thread-safe."""

    def __init__(self, dim: int = 128, exact_max: int = 50_000, nlist: int = 0, nprobe: int = 64):
        self.dim = dim
        self.exact_max = exact_max
        self.nlist = nlist
        self.nprobe = nprobe
        self._n = 0
        self._buf = np.zeros((0, dim), np.float32)  # rows [0, n) are live; capacity doubles
        self._sqbuf = np.zeros(0, np.float32)
        self._idbuf = np.zeros(0, np.int64)  # stable FAISS id of each row
        self._keys: list[str] = []
        self._row: dict[str, int] = {}
        self._next_id = 0
        self._key_of_id: dict[int, str] = {}
        self._faiss = None
        self._trained_at = 0
        self._building = False
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return self._n

    @property
    def kind(self) -> str:
        return IVF if self._faiss is not None else EXACT

    @property
    def _vec(self) -> np.ndarray:
        return self._buf[: self._n]

    # -- changes -----------------------------------------------------------------------------
    def add(self, keys: list[str], vectors: np.ndarray) -> None:
        """Add (or replace) rows; may (re)build the FAISS index when the size crosses ``exact_max``."""
        vectors = np.ascontiguousarray(np.atleast_2d(vectors), np.float32)
        if vectors.shape != (len(keys), self.dim) or len(set(keys)) != len(keys):
            raise ValueError(f"expected {len(keys)} vectors of {self.dim} dimensions under distinct keys, "
                             f"got {vectors.shape}")
        with self._lock:
            self.remove([k for k in keys if k in self._row], rebuild=False)
            n0, m = self._n, len(keys)
            if n0 + m > len(self._buf):
                cap = max(1024, 2 * len(self._buf), n0 + m)
                self._buf = np.concatenate([self._buf[:n0], np.zeros((cap - n0, self.dim), np.float32)])
                self._sqbuf = np.concatenate([self._sqbuf[:n0], np.zeros(cap - n0, np.float32)])
                self._idbuf = np.concatenate([self._idbuf[:n0], np.zeros(cap - n0, np.int64)])
            ids = np.arange(self._next_id, self._next_id + m, dtype=np.int64)
            self._next_id += m
            self._buf[n0 : n0 + m] = vectors
            self._sqbuf[n0 : n0 + m] = np.einsum("ij,ij->i", vectors, vectors)
            self._idbuf[n0 : n0 + m] = ids
            for i, (k, fid) in enumerate(zip(keys, ids.tolist())):
                self._row[k] = n0 + i
                self._key_of_id[fid] = k
            self._keys.extend(keys)
            self._n = n0 + m
            if self._faiss is not None:
                self._faiss.add_with_ids(vectors, ids)
        self._maybe_rebuild()

    def remove(self, keys: list[str], rebuild: bool = True) -> int:
        """Drop rows by key (unknown keys are ignored); returns how many were removed."""
        with self._lock:
            rows = sorted({self._row[k] for k in keys if k in self._row}, reverse=True)
            if not rows:
                return 0
            gone_ids = self._idbuf[rows].copy()
            for r in rows:  # swap-delete, highest row first, so every move is O(1)
                last = self._n - 1
                del self._row[self._keys[r]]
                if r != last:
                    self._buf[r], self._sqbuf[r], self._idbuf[r] = self._buf[last], self._sqbuf[last], self._idbuf[last]
                    self._keys[r] = self._keys[last]
                    self._row[self._keys[r]] = r
                self._keys.pop()
                self._n = last
            for fid in gone_ids.tolist():
                self._key_of_id.pop(fid, None)
            if self._faiss is not None:
                self._faiss.remove_ids(gone_ids)
        if rebuild:
            self._maybe_rebuild()
        return len(rows)

    def clear(self) -> None:
        with self._lock:
            self.remove(list(self._keys))

    def _maybe_rebuild(self) -> None:
        """Switch to exact below ``exact_max``; (re)train FAISS when crossing it or doubling since.

        Training takes seconds at 1e6 rows, so it runs on a copy without the lock: searches go on
        meanwhile (on the previous index, or the exact scan), and changes made during the build
        are applied to the new index before it replaces the old one.
        """
        with self._lock:
            n = self._n
            if n <= self.exact_max:
                self._faiss, self._trained_at = None, 0
                return
            if self._building or (self._faiss is not None and n <= 2 * self._trained_at):
                return
            self._building = True
            vec, ids = self._vec.copy(), self._idbuf[:n].copy()
        try:
            index = self._train(vec, ids)
        finally:
            with self._lock:
                self._building = False
        with self._lock:
            live = self._idbuf[: self._n]
            added = np.isin(live, ids, invert=True)
            if added.any():
                index.add_with_ids(self._vec[added], live[added])
            gone = ids[np.isin(ids, live, invert=True)]
            if len(gone):
                index.remove_ids(gone)
            if self._n > self.exact_max:
                self._faiss, self._trained_at = index, len(ids)

    def _train(self, vec: np.ndarray, ids: np.ndarray):
        import faiss

        n = len(vec)
        nlist = self.nlist or auto_nlist(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(self.dim), self.dim, nlist, faiss.METRIC_L2)
        rng = np.random.default_rng(0)
        sample = vec if n <= 64 * nlist else vec[rng.choice(n, 64 * nlist, replace=False)]
        index.train(np.ascontiguousarray(sample))
        index.add_with_ids(vec, ids)
        index.nprobe = min(self.nprobe, nlist)
        return index

    # -- queries -----------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int = 1, exact: bool | None = None) -> list[list[Hit]]:
        """The ``k`` nearest rows of each query (nearest first); ``exact`` forces the numpy scan."""
        q = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have {q.shape[1]} dimensions, the gallery {self.dim}")
        with self._lock:
            n = self._n
            if n == 0 or k <= 0:
                return [[] for _ in range(len(q))]
            k = min(k, n)
            if self._faiss is not None and not exact:
                d2, ids = self._faiss.search(q, k)
                return [[Hit(self._key_of_id[int(i)], math.sqrt(max(float(d), 0.0))) for d, i in zip(dr, ir) if i >= 0]
                        for dr, ir in zip(d2, ids)]
            d2 = self._sqbuf[None, :n] - 2.0 * (q @ self._vec.T) + np.einsum("ij,ij->i", q, q)[:, None]
            if k < n:
                part = np.argpartition(d2, k - 1, axis=1)[:, :k]
            else:
                part = np.broadcast_to(np.arange(n), (len(q), n))
            out = []
            for qi, cols in zip(q, part):
                # the expanded form loses precision near 0: recompute the k winners directly
                d = np.linalg.norm(self._buf[cols] - qi, axis=1)
                order = np.argsort(d, kind="stable")
                out.append([Hit(self._keys[cols[o]], float(d[o])) for o in order])
            return out

    def vectors(self, keys: list[str]) -> np.ndarray:
        with self._lock:
            return self._vec[[self._row[k] for k in keys]] if keys else np.zeros((0, self.dim), np.float32)
