"""Face front end on real LFW faces: MTCNN detection, dlib alignment, 128-D features."""

from __future__ import annotations

import numpy as np
import pytest

from facecodec.errors import ImageError, ModelFileMissingError, NoFaceError
from facecodec.images import load_rgb

pytestmark = pytest.mark.slow


def test_every_sample_image_has_a_detected_face_with_five_landmarks(frontend, sample_images):
    for path in sample_images[:8]:
        dets = frontend.detector.detect(load_rgb(path))
        assert dets, path
        d = dets[0]
        assert d.landmarks.shape == (5, 2)
        x1, y1, x2, y2 = d.box
        assert x1 < d.landmarks[0, 0] < d.landmarks[1, 0] < x2  # eyes inside the box, left before right
        assert y1 < d.landmarks[0, 1] < d.landmarks[3, 1] < y2  # eyes above the mouth
        assert 0.9 < d.probability <= 1.0 and d.quality.face_size > 50


def test_aligned_chip_and_feature_have_the_backend_shapes(sample_faces):
    _, face = sample_faces[0]
    assert face.chip.shape == (150, 150, 3) and face.chip.dtype == np.uint8
    assert face.feature.shape == (128,) and face.feature.dtype == np.float32
    assert not face.quality.fallback


def test_same_person_is_nearer_than_other_people(sample_features):
    people, feats = sample_features
    d = np.linalg.norm(feats[:, None] - feats[None], axis=2)
    same = np.array(people)[:, None] == np.array(people)[None]
    off = ~np.eye(len(people), dtype=bool)
    # dlib's own decision threshold is 0.6: nearly all pairs fall on the right side of it
    correct = np.mean((d[off] < 0.6) == same[off])
    assert correct > 0.95


def test_blank_image_has_no_face_and_fallback_is_recorded(frontend):
    blank = np.full((250, 250, 3), 128, np.uint8)
    assert frontend.detector.detect(blank) == []
    with pytest.raises(NoFaceError):
        frontend.analyze_main(blank, fallback=False)
    face = frontend.analyze_main(blank, fallback=True)
    assert face.quality.fallback and face.quality.probability == 0.0


@pytest.mark.parametrize("side", [16, 17, 18, 19, 20])
def test_an_image_smaller_than_the_smallest_face_mtcnn_looks_for_has_no_face(frontend, side):
    """16-19 px passes the size check but is under MTCNN's 20 px minimum face (its pyramid would be empty)."""
    image = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    assert frontend.detector.detect(image) == []
    assert frontend.analyze(image) == []


def test_unusable_images_raise_image_error(frontend, tmp_path):
    with pytest.raises(ImageError):
        frontend.analyze(np.zeros((100, 100), np.uint8))
    with pytest.raises(ImageError):
        frontend.analyze(np.zeros((8, 8, 3), np.uint8))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(ImageError):
        load_rgb(bad)
    with pytest.raises(ImageError):
        load_rgb(tmp_path / "missing.jpg")


def test_facenet_backend_names_its_setting_when_weights_are_missing(monkeypatch):
    from facecodec.frontend.features import FacenetVggface2

    monkeypatch.delenv("FACECODEC_FACENET_WEIGHTS", raising=False)
    backend = FacenetVggface2(weights=None)
    with pytest.raises(ModelFileMissingError, match="FACECODEC_FACENET_WEIGHTS"):
        backend.embed([np.zeros((160, 160, 3), np.uint8)])


def test_facenet_backend_runs_with_weights_from_a_file(tmp_path, sample_images):
    import torch
    from facenet_pytorch import InceptionResnetV1

    from facecodec.frontend import FaceFrontEnd
    from facecodec.frontend.features import FacenetVggface2

    path = tmp_path / "facenet.pt"
    torch.manual_seed(0)
    torch.save(InceptionResnetV1(pretrained=None).state_dict(), path)
    fe = FaceFrontEnd(FacenetVggface2(weights=path))
    face = fe.analyze_main(load_rgb(sample_images[0]))
    assert face.chip.shape == (160, 160, 3)
    assert face.feature.shape == (512,)
    assert np.linalg.norm(face.feature) == pytest.approx(1.0, abs=1e-3)
