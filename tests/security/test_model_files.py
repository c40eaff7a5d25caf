"""A model file is data, never code: a swapped weights file is refused before it is unpickled.

The attack (issue 15, item 5): whoever can write to ``FACECODEC_MODEL_DIR`` (searched before the
package's own model folder) drops a file named like a registered model. ``learned.load`` read it
with ``torch.load(weights_only=False)``, so a pickle in it ran arbitrary code in the server or the
edge agent, and the manifest's SHA-256 was never compared with the file's. Now every registered
file's hash is checked before it is loaded (``ModelIntegrityError``), and PyTorch files are read
with ``weights_only=True``.

A real process (``python -m`` a small script) loads the learned codec with a hostile file in
``FACECODEC_MODEL_DIR``; the pickle would create a marker file if it ever ran.
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from facecodec import zoo
from testkit.processes import ROOT, clean_env

pytestmark = pytest.mark.slow


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # creates the marker file when unpickled


LOAD = """
import sys
from facecodec import learned
from facecodec.errors import FaceCodecError
try:
    learned.load("residual", {quality})
except FaceCodecError as e:
    print("REFUSED", type(e).__name__, e)
    sys.exit(3)
print("LOADED")
"""


def test_a_swapped_model_file_is_refused_and_never_unpickled(tmp_path):
    entry = next(e for e in zoo.entries(kind="learned-codec") if e.tag)
    marker = tmp_path / "pwned"
    folder = tmp_path / "models"
    folder.mkdir()
    with open(folder / entry.file, "wb") as f:
        pickle.dump({"config": {}, "state": _Payload(str(marker))}, f)
    done = subprocess.run([sys.executable, "-c", LOAD.format(quality=entry.tag)], cwd=ROOT,
                          env=clean_env(FACECODEC_MODEL_DIR=str(folder)), capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert not marker.exists(), "the model file's pickle ran code"
    assert done.returncode == 3 and "ModelIntegrityError" in out and entry.name in out, out


def test_the_registered_files_match_their_manifest_hashes():
    for e in zoo.entries():
        zoo.verify(zoo.model_path(e.name), e)  # raises ModelIntegrityError otherwise
