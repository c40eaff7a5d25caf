"""The tracker sends one observation per track per interval, the best one, and keeps people apart: a
face continues a track only when its feature is near the track's and the track could have moved there."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.tracker import Sighting, Tracker, iou


def feat(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return v / np.linalg.norm(v)  # unit vectors: two random ones are about 1.4 apart


def cand(box, f, score, t, tag=None) -> Sighting:
    return Sighting(tuple(float(v) for v in box), f, score, t, tag)


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert abs(iou((0, 0, 10, 10), (5, 0, 15, 10)) - 50 / 150) < 1e-9


def test_one_observation_per_interval_and_it_is_the_best():
    tr = Tracker(interval_s=5.0, ttl_s=2.0)
    f = feat(1)
    sent = []
    for i in range(25):  # 12.5 s of one person walking, 2 frames per second
        t = i * 0.5
        box = (100 + 4 * i, 50, 200 + 4 * i, 150)
        score = 10.0 + (7 if i in (3, 14) else 0) + 0.01 * i
        sent += tr.update([cand(box, f + 0.01 * feat(100 + i), score, t, i)], t)
    sent += tr.flush()
    assert [e.candidate.payload for e in sent] == [3, 14, 24]  # windows [0,5), [5,10), [10,12.5]: best of each
    assert len({e.track_id for e in sent}) == 1


def test_two_people_side_by_side_are_two_tracks():
    tr = Tracker(interval_s=1.0)
    a, b = feat(1), feat(2)
    sent = []
    for i in range(6):
        t = i * 0.5
        sent += tr.update([cand((0, 0, 100, 100), a, 1, t, "a"), cand((300, 0, 400, 100), b, 1, t, "b")], t)
    sent += tr.flush()
    by_track: dict[str, set] = {}
    for e in sent:
        by_track.setdefault(e.track_id, set()).add(e.candidate.payload)
    assert sorted(map(sorted, by_track.values())) == [["a"], ["b"]]


def test_another_person_in_the_same_place_starts_a_new_track():
    tr = Tracker(interval_s=10.0, ttl_s=5.0, min_hits=1)
    box = (100, 100, 200, 200)
    tr.update([cand(box, feat(1), 1, 0.0, "a")], 0.0)
    tr.update([cand(box, feat(2), 1, 0.5, "b")], 0.5)
    sent = tr.flush()
    assert sorted(e.candidate.payload for e in sent) == ["a", "b"]
    assert len({e.track_id for e in sent}) == 2


def test_a_fast_face_is_followed_by_its_feature_without_box_overlap():
    tr = Tracker(interval_s=10.0, ttl_s=5.0, min_hits=1)
    f = feat(3)
    tr.update([cand((0, 0, 50, 50), f, 1, 0.0, "x")], 0.0)
    tr.update([cand((110, 0, 160, 50), f + 0.02 * feat(4), 2, 0.5, "y")], 0.5)  # 2.2 box widths in 0.5 s
    sent = tr.flush()
    assert [e.candidate.payload for e in sent] == ["y"]


def test_the_same_feature_across_the_frame_in_an_instant_is_not_the_same_track():
    """A face cannot cross the frame between two frames: a twin elsewhere starts its own track."""
    tr = Tracker(interval_s=10.0, ttl_s=5.0, min_hits=1)
    f = feat(3)
    tr.update([cand((0, 0, 50, 50), f, 1, 0.0, "x")], 0.0)
    tr.update([cand((800, 300, 850, 350), f, 2, 0.1, "y")], 0.1)
    assert len({e.track_id for e in tr.flush()}) == 2


def near(f: np.ndarray, distance: float, seed: int) -> np.ndarray:
    """A feature ``distance`` away from ``f`` (in a random direction orthogonal to it)."""
    d = feat(seed)
    d = d - (d @ f) * f
    return (f + distance * d / np.linalg.norm(d)).astype(np.float32)


def test_someone_else_where_the_last_person_stood_is_a_new_track_even_when_alike():
    """People passing one spot back to back: box overlap is total, features 0.55 apart (closer than
    most different people, farther than one person between two frames): two tracks."""
    tr = Tracker(interval_s=10.0, ttl_s=5.0, min_hits=1)
    box = (100, 100, 200, 200)
    a = feat(1)
    tr.update([cand(box, a, 1, 0.0, "a")], 0.0)
    tr.update([cand(box, near(a, 0.55, 9), 1, 0.1, "b")], 0.1)
    tr.update([cand(box, near(a, 0.3, 10), 1, 0.2, "a again")], 0.2)
    by_track: dict[str, set] = {}
    for e in tr.flush():
        by_track.setdefault(e.track_id, set()).add(e.candidate.payload)
    assert len(by_track) == 2 and {"b"} in by_track.values()


def test_a_track_the_detector_did_not_look_at_is_held_until_it_looks_and_misses():
    """Motion gating: where nothing moved the person is still there; once the detector looks there and
    finds nobody, the track ages as usual."""
    tr = Tracker(interval_s=60.0, ttl_s=1.0, min_hits=1)
    tr.update([cand((0, 0, 50, 50), feat(5), 1, 0.0, "p")], 0.0)
    for t in (1.0, 2.0, 3.0):  # still: nothing moved anywhere
        assert tr.update([], t, looked=lambda box: False) == []
    assert len(tr.tracks) == 1
    tr.update([], 3.5, looked=lambda box: True)  # looked, not found
    assert tr.update([], 4.0, looked=lambda box: False) == []  # no longer held
    assert [e.candidate.payload for e in tr.update([], 4.6, looked=lambda box: False)] == ["p"]


def test_lost_track_is_sent_after_ttl_without_waiting_for_the_interval():
    tr = Tracker(interval_s=60.0, ttl_s=1.0, min_hits=1)
    tr.update([cand((0, 0, 50, 50), feat(5), 1, 0.0, "p")], 0.0)
    assert tr.update([], 0.5) == []
    sent = tr.update([], 1.6)
    assert [e.candidate.payload for e in sent] == ["p"]
    assert tr.tracks == [] and tr.flush() == []


def test_a_one_frame_detection_is_not_sent():
    tr = Tracker(interval_s=1.0, ttl_s=0.4, min_hits=2)
    a = feat(7)
    sent = []
    for i in range(4):
        t = i * 0.5
        faces = [cand((0, 0, 100, 100), a, 1, t, "person")]
        if i == 1:
            faces.append(cand((300, 0, 360, 60), feat(8), 5, t, "fluke"))
        sent += tr.update(faces, t)
    sent += tr.flush()
    assert {e.candidate.payload for e in sent} == {"person"}


@pytest.mark.slow
def test_people_passing_one_spot_back_to_back_are_each_observed_and_never_mixed(tmp_path):
    """bench/clips.py's "passing" clip from the committed sample: nine people, one after the other,
    drifting about the centre of a textured 720p frame; the real camera worker (motion gate, MTCNN,
    dlib, tracker) must observe each of them and never put two in one track."""
    from bench import clips
    from bench.edge import ClipRun, match

    people = clips.load_people(9, sample=True)
    truth = clips.write(clips.passing(people, (720, 1280), seed=5,
                                      corners=[p.image for p in clips.load_people(9, sample=True, seed=6)]),
                        tmp_path / "clip", 10.0)
    run = ClipRun(tmp_path / "clip", 10.0)
    try:
        run.feed(tmp_path / "clip", 10.0)
    finally:
        run.close()
    persons_of: dict[str, set] = {}
    for track, index, box in run.emitted:
        person = match(truth["frames"][index], box)
        if person is not None:
            persons_of.setdefault(track, set()).add(person)
    assert all(len(p) == 1 for p in persons_of.values()), persons_of
    assert set().union(*persons_of.values()) == set(range(9))
