"""The evaluation harness runs end to end (``--quick``) on a mini-LFW built from the test sample.

It checks that the commands work and write the documented fields, not the codec's figures
(those come from full runs on LFW, see eval/results/).
"""

from __future__ import annotations

import json
import shutil
from itertools import combinations
from pathlib import Path

import pytest

from eval.__main__ import main

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data" / "faces"


@pytest.fixture(scope="module")
def mini_lfw(tmp_path_factory) -> Path:
    """LFW's layout (images, 10-fold pairs.txt, splits) over the 36 committed sample images."""
    root = tmp_path_factory.mktemp("lfw")
    shutil.copytree(DATA, root / "lfw-deepfunneled")
    persons = sorted(p.name for p in DATA.iterdir() if p.is_dir())
    counts = {p: len(list((DATA / p).glob("*.jpg"))) for p in persons}
    matched = [(p, a, b) for p in persons for a, b in combinations(range(1, counts[p] + 1), 2)]
    mismatched = [(p, 1 + k % counts[p], q, 1 + (k + 1) % counts[q]) for k, (p, q) in enumerate(combinations(persons, 2))]
    lines = ["10\t3"]
    for f in range(10):
        lines += ["\t".join(map(str, matched[(3 * f + i) % len(matched)])) for i in range(3)]
        lines += ["\t".join(map(str, mismatched[(3 * f + i) % len(mismatched)])) for i in range(3)]
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    (root / "splits").mkdir()
    for split in ("train", "test"):
        (root / "splits" / f"{split}_people.txt").write_text("\n".join(persons) + "\n")
    return root


@pytest.fixture(scope="module")
def prepared(mini_lfw, tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LFW_ROOT", str(mini_lfw))
        main(["--cache", str(cache), "prepare", "--workers", "1"])
    return cache


def test_prepare_caches_a_feature_and_a_chip_for_every_image(prepared):
    import numpy as np

    names = (prepared / "names.txt").read_text().split()
    assert len(names) == len(list(DATA.glob("*/*.jpg")))
    assert np.load(prepared / "features.npy").shape == (len(names), 128)
    assert np.load(prepared / "chips.npy", mmap_mode="r").shape == (len(names), 150, 150, 3)


def test_quick_rate_accuracy_writes_every_curve(prepared, mini_lfw, tmp_path, monkeypatch):
    monkeypatch.setenv("LFW_ROOT", str(mini_lfw))
    out = tmp_path / "ra.json"
    main(["--cache", str(prepared), "rate-accuracy", "--quick", "--workers", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert 0.5 <= result["float_accuracy"] <= 1
    assert {"base_layer", "jpeg", "webp"} <= set(result["curves"])
    for pts in result["curves"].values():
        assert all({"param", "bytes", "accuracy"} <= set(p) for p in pts)
    assert {"codec", "step", "bytes", "accuracy"} <= set(result["default_point"]) and result["commit"]


def test_quick_rate_distortion_counts_the_base_layer_and_reports_bd_rate(prepared, mini_lfw, tmp_path, monkeypatch):
    monkeypatch.setenv("LFW_ROOT", str(mini_lfw))
    out = tmp_path / "rd.json"
    main(["--cache", str(prepared), "rate-distortion", "--quick", "--workers", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    base = min(p["bytes"] for p in result["curves"]["base_layer"] if "bytes" in p) if any(
        "bytes" in p for p in result["curves"]["base_layer"]) else 0
    for name in ("jpeg", "jpeg2000", "webp", "avif"):
        assert all({"param", "bytes", "bpp", "psnr", "ms_ssim"} <= set(p) for p in result["curves"][name])
        scal = result["curves"][f"base+{name}"]
        assert all(p["bytes"] > base for p in scal)
        assert f"base+{name}_vs_{name}" in result["bd_rate"]
    assert result["images"] == 24 and result["resolution"] == [112, 112]


def test_avif_settings_measures_every_setting_on_both_sides(prepared, mini_lfw, tmp_path, monkeypatch):
    monkeypatch.setenv("LFW_ROOT", str(mini_lfw))
    out = tmp_path / "avif.json"
    main(["--cache", str(prepared), "avif-settings", "--images", "3", "--workers", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    settings = result["settings"]
    assert result["registered"] in settings and len(settings) >= 4
    registered = settings[result["registered"]]
    assert registered["anchor_vs_registered_anchor"] == 0.0
    for entry in settings.values():
        assert {"scalable_vs_own_anchor", "scalable_vs_own_anchor_28_36_mse", "ondemand_vs_own_anchor"} <= set(entry)
        assert entry["encode_ms"]["anchor"] > 0 and entry["encode_ms"]["scalable"] > 0
        # the scalable side carries the base layer: more bytes than the enhancement alone at every point
        assert all(p["bytes"] > 0 for p in entry["curves"]["scalable"])


def test_prediction_bound_measures_each_prediction_against_the_compact_anchor(prepared, mini_lfw, tmp_path, monkeypatch):
    monkeypatch.setenv("LFW_ROOT", str(mini_lfw))
    out = tmp_path / "bound.json"
    main(["--cache", str(prepared), "prediction-bound", "--least", "3", "--per-person", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["images"] == result["people"] >= 2
    assert set(result["curves"]) == {"avif-compact", "mean_face", "shipped", "oracle"}
    for name in ("mean_face", "shipped", "oracle"):
        assert {f"{name}_vs_avif-compact", f"{name}_vs_avif-compact_ondemand_28_36_mse"} <= set(result["bd_rate"])
        # every byte counts the base layer and the header on top of what the enhancement layer carries
        assert all(p["bytes"] >= p["bytes_enhancement"] + result["base_layer_bytes"] - 1 for p in result["curves"][name])
