"""dlib's descriptor network: the PyTorch port (the source of the conversion) and the converted network
that the services run both give dlib's features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facecodec.frontend.dlib_torch import (
    DlibFormatError,
    TorchDescriptor,
    load,
    read_layers,
)

pytestmark = pytest.mark.slow
FACES = Path(__file__).parent / "data" / "faces"


@pytest.fixture(scope="module")
def chips():
    from facecodec.frontend import FaceFrontEnd
    from facecodec.images import load_rgb

    fe = FaceFrontEnd("dlib-resnet-128")
    out = []
    for p in sorted(FACES.glob("*/*_0001.jpg")):
        image = load_rgb(p)
        out.append(fe.backend.align(image, fe.detector.detect(image)[0]))
    return out


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_same_features_as_dlib(chips, runtime, monkeypatch):
    from facecodec.frontend.features import DlibResnet128
    from facecodec.settings import get_settings

    monkeypatch.setenv("FACECODEC_RUNTIME", runtime)
    get_settings.cache_clear()
    try:
        theirs = DlibResnet128(engine="dlib").embed(chips)
        mine = DlibResnet128(engine="runtime").embed(chips)  # one batch
        one = DlibResnet128(engine="runtime").embed(chips[:1])
    finally:
        get_settings.cache_clear()
    assert mine.shape == (len(chips), 128) and mine.dtype == np.float32
    assert np.linalg.norm(mine - theirs, axis=1).max() < 1e-4  # dlib's own match threshold is 0.6
    np.testing.assert_allclose(one[0], mine[0], atol=1e-5)


def test_the_pytorch_port_gives_dlibs_features(chips):
    from facecodec.frontend.features import DlibResnet128

    dlib = DlibResnet128(engine="dlib")
    port = TorchDescriptor(dlib.embed_dlib).embed(chips)
    assert np.linalg.norm(port - dlib.embed(chips), axis=1).max() < 1e-4


def test_file_structure_is_read():
    from facecodec.frontend.dlib_torch import MODEL_FILE
    from facecodec.zoo import package_data_file

    layers = read_layers(package_data_file(*MODEL_FILE).read_bytes())
    names = [x.name for x in layers]
    assert names.count("con_4") == 29 and names.count("affine_") == 29 and names.count("add_prev_") == 14
    assert layers[1].ints == (150, 150) and abs(layers[1].floats[0] - 122.782) < 1e-3


def test_a_damaged_file_is_refused(tmp_path):
    from facecodec.frontend.dlib_torch import MODEL_FILE
    from facecodec.zoo import package_data_file

    data = bytearray(package_data_file(*MODEL_FILE).read_bytes())
    bad = tmp_path / "cut.dat"
    bad.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(DlibFormatError):
        load(bad)
    bad.write_bytes(b"\x01\x01" + bytes(1000))
    with pytest.raises(DlibFormatError):
        load(bad)
