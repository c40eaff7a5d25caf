"""The spool and the texture store: persistence, caps, retention, clear answers."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge_agent.errors import StoreError
from edge_agent.spool import Spool
from edge_agent.texture import Lookup, TextureStore


def test_spool_keeps_order_survives_reopen_and_forgets_acked(tmp_path):
    path = tmp_path / "spool.sqlite3"
    sp = Spool(path, 1 << 20)
    for i in range(10):
        sp.put("cam1" if i % 2 == 0 else "cam2", f"f{i}", bytes([i]) * 100)
    sp.put("cam1", "f0", b"again")  # same face id: ignored, replays never duplicate
    assert len(sp) == 10 and sp.nbytes == 1000
    sp.close()

    sp = Spool(path, 1 << 20)
    assert len(sp) == 10 and sp.count("cam1") == 5
    rows = sp.pending("cam1", 0, 3)
    assert [r.face_id for r in rows] == ["f0", "f2", "f4"] and rows[0].data == bytes([0]) * 100
    assert [r.face_id for r in sp.pending("cam1", rows[-1].seq, 10)] == ["f6", "f8"]
    assert sp.ack(["f0", "f2", "unknown"]) == 2
    assert [r.face_id for r in sp.pending("cam1", 0, 10)] == ["f4", "f6", "f8"]
    assert len(sp) == 8 and sp.nbytes == 800


def test_spool_cap_drops_the_oldest(tmp_path):
    sp = Spool(tmp_path / "s.sqlite3", 1000)
    for i in range(15):
        dropped = sp.put("c", f"f{i}", b"x" * 100)
        assert dropped == ([] if i < 10 else [f"f{i - 10}"])
    assert len(sp) == 10 and sp.nbytes == 1000 and sp.dropped == 5
    with pytest.raises(StoreError, match="larger than the whole spool"):
        sp.put("c", "big", b"x" * 1001)


def test_spool_wakes_a_waiting_reader(tmp_path):
    sp = Spool(tmp_path / "s.sqlite3", 1 << 20)
    gen = sp.generation
    t = threading.Timer(0.1, lambda: sp.put("c", "f", b"1"))
    t.start()
    assert sp.wait_for_change(gen, 5.0) != gen
    t.join()


def test_unusable_spool_folder_is_a_store_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot open"):
        Spool(blocker / "spool.sqlite3", 1000)


def crop(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (112, 112, 3), dtype=np.uint8)


def test_texture_round_trip_is_lossless(tmp_path):
    st = TextureStore(tmp_path / "t.sqlite3", 10 << 20, 3600)
    c = crop(1)
    st.put("a", c, b"\xb1base")
    got = st.get("a")
    assert got.status is Lookup.OK and got.base == b"\xb1base"
    np.testing.assert_array_equal(got.crop, c)
    assert st.get("never").status is Lookup.UNKNOWN


def test_texture_retention_gives_expired_not_unknown(tmp_path):
    st = TextureStore(tmp_path / "t.sqlite3", 10 << 20, retention_s=60)
    st.put("old", crop(1), b"b", created_ms=1_000_000)
    st.put("new", crop(2), b"b", created_ms=1_050_000)
    assert st.get("old", now_ms=1_059_000).status is Lookup.OK
    got = st.get("old", now_ms=1_061_000)
    assert got.status is Lookup.EXPIRED and "retention" in got.reason
    assert st.sweep(now_ms=1_200_000) == 1  # "new"; "old" already went with the lookup
    assert len(st) == 0 and st.nbytes == 0
    assert st.get("new").status is Lookup.EXPIRED


def test_texture_size_cap_evicts_the_oldest(tmp_path):
    one = TextureStore(tmp_path / "probe.sqlite3", 10 << 20, 3600)
    one.put("x", crop(0), b"b")
    size = one.nbytes
    st = TextureStore(tmp_path / "t.sqlite3", int(size * 3.5), 3600)
    now = int(time.time() * 1000)
    for i in range(5):
        st.put(f"f{i}", crop(i), b"b", created_ms=now + i)
    assert len(st) == 3 and st.nbytes <= st.max_bytes and st.evicted == 2
    assert st.get("f0").status is Lookup.EXPIRED and "size cap" in st.get("f1").reason
    assert st.get("f4").status is Lookup.OK


def test_drop_texture_deletes_and_answers_expired(tmp_path):
    st = TextureStore(tmp_path / "t.sqlite3", 10 << 20, 3600)
    st.put("a", crop(1), b"b")
    st.put("b", crop(2), b"b")
    assert st.drop(["a", "zzz"]) == 1
    assert st.get("a").status is Lookup.EXPIRED and "server" in st.get("a").reason
    assert st.get("b").status is Lookup.OK and len(st) == 1
    st.close()
    assert TextureStore(tmp_path / "t.sqlite3", 10 << 20, 3600).get("a").status is Lookup.EXPIRED


def test_context_pictures_are_kept_sealed_counted_and_dropped_with_the_crop(tmp_path):
    """The context layer lives in the crop's row: sealed with the same key, counted in the size cap, gone
    with the crop (the bytes leave the files), and a store made before it gains the column."""
    import base64
    import os
    import sqlite3

    from edge_agent.at_rest import Sealer, parse_key

    path = tmp_path / "t.sqlite3"
    old = sqlite3.connect(path)  # a texture store of an earlier release: no context column
    old.executescript("CREATE TABLE texture (face_id TEXT PRIMARY KEY, created_ms INTEGER NOT NULL, "
                      "size INTEGER NOT NULL, base BLOB NOT NULL, crop BLOB NOT NULL);")
    old.close()
    sealer = Sealer(parse_key(base64.b64encode(os.urandom(32)).decode()))
    st = TextureStore(path, 10 << 20, 3600, sealer)
    picture = b"\xd1context-picture-" + os.urandom(64)
    st.put("a", crop(1), b"\xb1base", context=picture)
    st.put("b", crop(2), b"\xb1base")
    assert st.get("a", context=True).context == picture and st.get("b", context=True).context is None
    assert st.get("a").crop is not None and st.get("a").context is None  # the face's layer reads no picture
    without = TextureStore(tmp_path / "plain.sqlite3", 10 << 20, 3600, sealer)
    without.put("a", crop(1), b"\xb1base")
    assert st.nbytes - without.nbytes > len(picture)  # in the size cap
    st.close()
    assert picture[1:] not in b"".join(p.read_bytes() for p in tmp_path.glob("t.sqlite3*"))  # sealed
    st = TextureStore(path, 10 << 20, 3600, sealer)
    assert st.get("a", context=True).context == picture
    sealed = sqlite3.connect(path).execute("SELECT context FROM texture WHERE face_id = 'a'").fetchone()[0]
    st.drop(["a"])
    assert st.get("a", context=True).status is Lookup.EXPIRED
    st.close()
    files = b"".join(p.read_bytes() for p in tmp_path.glob("t.sqlite3*"))
    assert sealed[8:40] not in files  # the sealed picture's bytes left the database and its WAL
