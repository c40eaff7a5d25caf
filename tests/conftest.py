from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data" / "faces"


def _sample_images() -> list[Path]:
    return sorted(DATA.glob("*/*.jpg"))


@pytest.fixture(scope="session")
def sample_images() -> list[Path]:
    """The committed LFW test-people images (tests/data/faces/<person>/*.jpg), sorted."""
    return _sample_images()


@pytest.fixture(scope="session")
def frontend():
    from facecodec.frontend import FaceFrontEnd

    return FaceFrontEnd()


@pytest.fixture(scope="session")
def sample_faces(frontend):
    """(person, Face) for every committed sample image, analysed once per test session."""
    from facecodec.images import load_rgb

    return [(p.parent.name, frontend.analyze_main(load_rgb(p))) for p in _sample_images()]


@pytest.fixture(scope="session")
def sample_features(sample_faces) -> tuple[list[str], np.ndarray]:
    return [p for p, _ in sample_faces], np.stack([f.feature for _, f in sample_faces])
