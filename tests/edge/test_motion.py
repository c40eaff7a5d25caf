"""The motion gate: where the detector looks. Nothing changed: nowhere; a face-sized thing moved: a
region around it, grown and merged; most of the frame changed: the whole frame."""

from __future__ import annotations

import numpy as np

from edge_agent.motion import MotionGate, MotionSettings, covers, merge

H, W = 720, 1280


def frame(rng: np.random.Generator, block: tuple[int, int] | None = None) -> np.ndarray:
    """A 1/8-size grey frame of a fixed texture, with a bright 100x100 (full-size) block at (x, y)."""
    g = np.random.default_rng(7).integers(40, 200, (H // 8, W // 8)).astype(np.uint8)
    g = np.clip(g.astype(int) + rng.integers(-2, 3, g.shape), 0, 255).astype(np.uint8)  # sensor noise
    if block is not None:
        x, y = block
        g[y // 8 : (y + 100) // 8, x // 8 : (x + 100) // 8] = 250
    return g


def test_the_first_frame_is_looked_at_whole_and_a_static_scene_never_again():
    gate, rng = MotionGate(MotionSettings(), min_face=40), np.random.default_rng(0)
    assert gate.regions(frame(rng), 0.0, (H, W)) == [(0, 0, W, H)]
    assert all(gate.regions(frame(rng), t / 10, (H, W)) == [] for t in range(1, 30))


def test_a_moving_face_sized_block_is_looked_at_where_it_is_and_only_there():
    gate, rng = MotionGate(MotionSettings(hold_s=0.0), min_face=40), np.random.default_rng(1)
    gate.regions(frame(rng), 0.0, (H, W))
    regions = gate.regions(frame(rng, (600, 300)), 0.1, (H, W))
    assert len(regions) == 1 and covers(regions, (600, 300, 700, 400))
    x1, y1, x2, y2 = regions[0]
    assert (x2 - x1) * (y2 - y1) < 0.1 * H * W  # a small part of the frame
    assert not covers(regions, (100, 100, 200, 200))


def test_a_changed_region_stays_looked_at_for_hold_s():
    gate, rng = MotionGate(MotionSettings(hold_s=1.0, learning_rate=0.0), min_face=40), np.random.default_rng(2)
    gate.regions(frame(rng), 0.0, (H, W))
    gate.regions(frame(rng, (600, 300)), 0.1, (H, W))
    assert covers(gate.regions(frame(rng), 0.5, (H, W)), (600, 300, 700, 400))  # it left: looked at a while
    assert gate.regions(frame(rng), 1.3, (H, W)) == []


def test_a_change_of_most_of_the_frame_is_looked_at_whole():
    gate, rng = MotionGate(MotionSettings(), min_face=40), np.random.default_rng(3)
    gate.regions(frame(rng), 0.0, (H, W))
    assert gate.regions(255 - frame(rng), 0.1, (H, W)) == [(0, 0, W, H)]  # the lights went out


def test_disabled_gating_always_looks_at_the_whole_frame():
    gate, rng = MotionGate(MotionSettings(enabled=False)), np.random.default_rng(4)
    assert all(gate.regions(frame(rng), t, (H, W)) == [(0, 0, W, H)] for t in range(5))


def test_merge_leaves_no_two_regions_overlapping():
    boxes = merge([(0, 0, 10, 10), (5, 5, 20, 20), (30, 30, 40, 40), (19, 19, 31, 31)])
    assert boxes == [(0, 0, 40, 40)]
    assert merge([(0, 0, 10, 10), (20, 20, 30, 30)]) == [(0, 0, 10, 10), (20, 20, 30, 30)]
