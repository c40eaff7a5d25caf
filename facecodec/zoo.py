"""The model registry ("zoo"): every weights file the codec uses, found by name.

Project-trained models are listed in ``facecodec/models/manifest.json`` (name, kind, file,
sha256, model card). Their file names carry the first 8 hex digits of their sha256, so a
changed file is a new model. Files are looked up first in ``FACECODEC_MODEL_DIR`` (when set)
and then in the package. Nothing is loaded at import time: callers ask for a path or an
object the first time they need it, and loaders cache what they build.

Third-party weights that ship inside installed packages (dlib's models in
``face_recognition_models``, MTCNN in ``facenet-pytorch``) are located here too, without
importing those packages' ``__init__`` (``face_recognition_models`` imports
``pkg_resources`` there).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from facecodec.errors import ModelFileMissingError, ModelIntegrityError, UnknownModelError
from facecodec.settings import get_settings

PACKAGE_MODEL_DIR = Path(__file__).parent / "models"
MANIFEST = PACKAGE_MODEL_DIR / "manifest.json"


@dataclass(frozen=True)
class ModelEntry:
    """One registered model file."""

    name: str
    kind: str
    file: str
    sha256: str
    card: str | None = None
    tag: int | None = None
    backend: str | None = None
    default_step: int | None = None
    head: str | None = None  # reconstruction models: "display" (the default), "prediction" or both, "+"-joined

    def serves(self, head: str) -> bool:
        """Whether this model is registered for ``head`` (a model with no head is a display model)."""
        return head in (self.head or "display").split("+")


@lru_cache(maxsize=1)
def _entries() -> dict[str, ModelEntry]:
    if not MANIFEST.exists():
        return {}
    raw = json.loads(MANIFEST.read_text())
    return {e["name"]: ModelEntry(**e) for e in raw["models"]}


def entries(kind: str | None = None) -> list[ModelEntry]:
    """All registered models, optionally of one kind (``base-layer``, ``reconstruction``...)."""
    return [e for e in _entries().values() if kind is None or e.kind == kind]


def newest(kind: str, backend: str | None = None, head: str | None = None) -> ModelEntry:
    """The newest registered model of ``kind`` (for ``backend``, of ``head`` when given): the one
    with the highest tag. Tags are handed out in order (:func:`add`), so this is the one registered
    last; file names end in a content hash and say nothing about age. This is the one rule for
    "the default model" of every kind. :class:`UnknownModelError` when there is none."""
    found = [e for e in entries(kind) if (backend is None or e.backend == backend)
             and (head is None or e.serves(head))]
    if not found:
        what = " ".join(x for x in (kind, backend and f"for {backend}", head and f"({head} head)") if x)
        raise UnknownModelError(f"no {what} model is registered")
    return max(found, key=lambda e: (e.tag or 0, e.name))


def entry(name: str) -> ModelEntry:
    """The registry entry called ``name``; :class:`UnknownModelError` if there is none."""
    try:
        return _entries()[name]
    except KeyError:
        known = ", ".join(sorted(_entries())) or "none"
        raise UnknownModelError(f"unknown model {name!r} (registered: {known})") from None


def model_path(name: str) -> Path:
    """The file of a registered model, searched in ``FACECODEC_MODEL_DIR`` then the package."""
    e = entry(name)
    candidates = []
    model_dir = get_settings().model_dir
    if model_dir is not None:
        candidates.append(Path(model_dir) / e.file)
    candidates.append(PACKAGE_MODEL_DIR / e.file)
    for path in candidates:
        if path.is_file():
            verify(path, e)
            return path
    where = ", ".join(str(p) for p in candidates)
    raise ModelFileMissingError(
        f"model {name!r} needs the file {e.file!r}, not found in {where}; "
        "set FACECODEC_MODEL_DIR to the folder that holds it"
    )


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256: each file hashed once


def verify(path: Path, e: ModelEntry) -> None:
    """:class:`ModelIntegrityError` unless ``path`` has the SHA-256 the manifest lists for ``e``.

    Every registered file is checked before it is loaded: a file in ``FACECODEC_MODEL_DIR`` (or a
    package folder) that was swapped or damaged is refused with a message, not run.
    """
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    digest = _verified.get(key) or file_sha256(path)
    if digest != e.sha256:
        raise ModelIntegrityError(f"model file {path} has SHA-256 {digest[:16]}..., but the registry lists "
                                  f"{e.sha256[:16]}... for model {e.name!r}: restore the file (or remove it from "
                                  "FACECODEC_MODEL_DIR), or register the new one")
    _verified[key] = digest


def register(new: ModelEntry) -> None:
    """Add or replace an entry in the manifest (used by the training commands)."""
    raw = {"models": []}
    if MANIFEST.exists():
        raw = json.loads(MANIFEST.read_text())
    models = [m for m in raw["models"] if m["name"] != new.name]
    models.append({k: v for k, v in new.__dict__.items() if v is not None})
    models.sort(key=lambda m: (m["kind"], m["name"]))
    MANIFEST.write_text(json.dumps({"models": models}, indent=2) + "\n")
    _entries.cache_clear()


def add(data: bytes, prefix: str, suffix: str, kind: str, card: str | None = None,
        preferred_tag: int | None = None, **fields) -> ModelEntry:
    """Write ``data`` into the package's model folder as ``<prefix>-<sha256[:8]><suffix>`` and
    register it (used by the training commands). It gets the first free tag among the models of
    its kind and backend (``preferred_tag`` when that is free; never 0), or keeps its tag when the
    same bytes are registered again; ``card`` may name the model as ``{name}``."""
    digest = hashlib.sha256(data).hexdigest()
    name = f"{prefix}-{digest[:8]}"
    if name in _entries():  # the same bytes again: keep the tag that payloads already name
        tag = _entries()[name].tag
    else:
        used = {e.tag for e in entries(kind) if e.backend == fields.get("backend")}
        tag = next(t for t in [preferred_tag, *range(1, 256)] if t and t not in used)
    PACKAGE_MODEL_DIR.mkdir(exist_ok=True)
    (PACKAGE_MODEL_DIR / f"{name}{suffix}").write_bytes(data)
    new = ModelEntry(name=name, kind=kind, file=f"{name}{suffix}", sha256=digest,
                     card=card.format(name=name) if card else None, tag=tag, **fields)
    register(new)
    return new


def unregister(name: str) -> None:
    """Drop an entry from the manifest (its file is left to the caller)."""
    raw = json.loads(MANIFEST.read_text())
    raw["models"] = [m for m in raw["models"] if m["name"] != name]
    MANIFEST.write_text(json.dumps(raw, indent=2) + "\n")
    _entries.cache_clear()


def package_data_file(package: str, *parts: str) -> Path:
    """A data file shipped inside an installed package, located without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileMissingError(
            f"the package {package!r} is not installed; it ships the file {'/'.join(parts)}"
        )
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    if not path.is_file():
        raise ModelFileMissingError(f"{path} is missing from the installed package {package!r}")
    return path
