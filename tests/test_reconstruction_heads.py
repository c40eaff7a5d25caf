"""The reconstruction's two heads: operators see the display model, the enhancement layer subtracts
the prediction head (today one ridge model serves both), and payloads that name an older predictor
still decode."""

from __future__ import annotations

import numpy as np
import pytest

from facecodec import enhancement, reconstruction, zoo
from facecodec.crop import face_crop


@pytest.fixture(scope="module")
def face(sample_faces):
    from facecodec import base_layer

    f = sample_faces[1][1]
    return f.chip, base_layer.encode(f.feature)


def test_the_shipped_display_and_prediction_heads_are_one_linear_ridge_model():
    """The ridge beats the display network on every figure of eval/results/reconstruction.json, so it
    serves both heads; the network stays registered for the payloads that name it."""
    display, predictor = reconstruction.default_name(), reconstruction.default_name("prediction")
    assert display == predictor
    assert zoo.entry(display).serves("display") and zoo.entry(display).serves("prediction")
    assert type(reconstruction.load_reconstructor(display).head).__name__ == "LinearHead"
    older = [e for e in zoo.entries(reconstruction.KIND) if e.serves("display") and e.name != display]
    assert older and all((e.tag or 0) < zoo.entry(display).tag for e in older)
    assert type(reconstruction.load_reconstructor(older[0].name).head).__name__ == "NetworkHead"


def test_the_enhancement_layer_names_the_prediction_head_and_the_base_view_uses_the_display_network(face):
    from facecodec import base_layer

    chip, base = face
    payload = enhancement.encode(chip, base, "webp", 50)
    assert enhancement.read_header(payload).predictor_tag == zoo.entry(reconstruction.default_name("prediction")).tag
    display = reconstruction.load_reconstructor(reconstruction.default_name())
    assert np.array_equal(reconstruction.reconstruct(base), display(base_layer.decode(base).feature)[0])


def test_without_a_prediction_head_the_display_network_predicts(monkeypatch):
    real = zoo._entries
    monkeypatch.setattr(zoo, "_entries", lambda: {n: e for n, e in real().items() if not e.serves("prediction")})
    assert zoo.entry(reconstruction.default_name()).head in (None, "display")
    assert reconstruction.default_name("prediction") == reconstruction.default_name()


def test_a_payload_predicted_by_the_older_display_network_still_decodes(face, monkeypatch):
    chip, base = face
    display = min((e for e in zoo.entries(reconstruction.KIND) if e.serves("display")), key=lambda e: e.tag or 0).name
    assert display != reconstruction.default_name("prediction")
    monkeypatch.setattr(reconstruction, "default_name", lambda head="display": display)
    payload = enhancement.encode(chip, base, "png", 0, mode="residual")
    monkeypatch.undo()
    assert enhancement.read_header(payload).predictor_tag == zoo.entry(display).tag
    out = enhancement.decode(payload, base).astype(int)
    assert np.abs(out - face_crop(chip).astype(int)).max() <= 1


def test_an_unknown_head_is_refused():
    from facecodec.errors import UnknownModelError

    with pytest.raises(UnknownModelError):
        reconstruction.default_name("thumbnail")


def test_the_prediction_head_beats_the_mean_face_on_the_sample(sample_faces):
    """The head exists to leave a smaller residual than no knowledge of the person would."""
    from facecodec import base_layer

    head = reconstruction.load_reconstructor(reconstruction.default_name("prediction"))
    crops = np.stack([face_crop(f.chip) for _, f in sample_faces]).astype(float)
    preds = np.stack([head(base_layer.decode(base_layer.encode(f.feature)).feature)[0] for _, f in sample_faces])
    mean_face = head.head.bias.reshape(112, 112, 3)
    assert np.mean((preds - crops) ** 2) < np.mean((mean_face - crops) ** 2)
