"""The base layer: a deep face feature, transformed, quantized and entropy coded (paper 3.1).

Encoding: ``y = P (f - mu)`` with ``P`` the first ``components`` rows of an orthonormal basis
learned on the train people's features, uniform scalar quantization ``q = round(y / step)`` with
``step`` from a ladder, and entropy coding of each ``q_i`` with a per-component discretized
distribution whose scale ``sigma_i`` was learned on the same features. Decoding inverts the
transform, so matching runs on ``f_hat = mu + P^T (q * step)`` in the feature space.

Two payload formats, each tied to the models fitted for it (a model file says its format):

- **Format 1** (PCA over all 128 dimensions): CompressAI's rANS (``rans64.h``: 64-bit state, 32-bit
  words, 16-bit precision), written here in numpy and Python (:func:`rans_encode`,
  :func:`rans_decode_many`) and tested bit-exact with CompressAI. The stream ends on a 32-bit word
  after flushing the 64-bit state: 4 to 11 bytes more than its information.
- **Format 2** (a discriminant basis: the leading eigenvectors of ``S_t - lambda S_w``, total and
  within-person scatter of the train people, so that the components kept are those that tell people
  apart): a range coder (:func:`range_encode`, :func:`range_decode_many`; 32-bit range with carry,
  16-bit precision) that ends on a byte: the final value is the one with the most trailing zero bits
  in the final interval, and zero bytes at the end are not written (the decoder reads zeros past the
  end). About 0.3 byte more than the information. The stream is canonical: the decoder re-encodes
  what it read and refuses a body the encoder would not have written.

Both coders read integer probability tables shipped in the model file (computed once at fitting time
from the floats, by SciPy and CompressAI's ``pmf_to_quantized_cdf``) and checked when the file is
loaded: edge and server code with the same integers whatever library versions they run, and neither
service imports CompressAI or PyTorch.

Payload, all lengths in bytes::

    format 1                                      format 2
    0     0xB1                                    0     0xB2
    1     backend code << 4 | step index          1     backend code << 4 | step index
    2     model tag (registry ``tag``)            2     model tag (registry ``tag``)
    3-4   CRC-16/CCITT of every other byte        3     CRC-8 (polynomial 0x07) of every other byte
    5-    rANS body (a multiple of 4 bytes)       4-    range-coder body (ends on a byte; no
                                                        trailing zero byte)

On the compact wire (facewire.v2) neither format's first five or four bytes travel with each face:
the stream's Hello names the three header bytes once and the server recomputes the checksum
(:func:`wire_body`, :func:`from_wire`). Format 2's one-byte checksum catches every single-bit error
and all but one in 256 other damages (truncations included); what gets past it is refused when the
body is not one the encoder writes. Every count of bytes in this project includes the header (5
bytes in format 1, 4 in format 2).
"""

from __future__ import annotations

import binascii
import bisect
import contextlib
import json
import math
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np

from facecodec.errors import (
    CorruptPayloadError,
    FaceCodecError,
    PayloadError,
    TruncatedPayloadError,
    UnknownFormatError,
    UnknownModelError,
)
from facecodec.frontend.features import BACKEND_CODES, BACKENDS
from facecodec.settings import get_settings

MAGIC = 0xB0
VERSION = 1  # format 1 (rANS, CRC-16); see VERSIONS
VERSIONS = (1, 2)  # every payload format this decoder reads
HEADER_BYTES = 5  # format 1's header (with its CRC-16)
HEADER_BYTES_V2 = 4  # format 2's header (with its CRC-8)
MIN_BODY_BYTES = 8  # rANS flushes its 64-bit state
PRECISION = 16
MAX_HALF_WIDTH = 2047  # largest |q| a symbol alphabet covers
KIND = "base-layer"


def _crc(data: bytes) -> int:
    return binascii.crc_hqx(data, 0xFFFF)


@lru_cache(maxsize=1)
def _crc8_table() -> bytes:
    table = bytearray(256)
    for i in range(256):
        c = i
        for _ in range(8):
            c = ((c << 1) ^ 0x07) & 0xFF if c & 0x80 else (c << 1) & 0xFF
        table[i] = c
    return bytes(table)


def _crc8(data: bytes) -> int:
    """CRC-8 with polynomial 0x07, initial value 0, no reflection ("CRC-8/SMBUS"): every single-bit
    error and every burst of 8 bits or fewer is caught (about 1 us for a format-2 payload)."""
    table, c = _crc8_table(), 0
    for b in data:
        c = table[c ^ b]
    return c


@dataclass(frozen=True)
class BaseLayerHeader:
    """What a base-layer payload says about itself."""

    version: int
    backend: str
    step_index: int
    model_tag: int


class DecodedBase(NamedTuple):
    """A decoded base layer: the feature the server matches on, and how it was coded (a named
    tuple: the server makes one per face it ingests, 5x faster than a frozen dataclass)."""

    feature: np.ndarray
    backend: str
    model: str
    step_index: int
    step: float
    nbytes: int


def read_header(payload: bytes) -> BaseLayerHeader:
    """Parse and check the fixed header (not the checksum) of a base-layer payload."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise UnknownFormatError(f"a base-layer payload is bytes, not {type(payload).__name__}")
    payload = bytes(payload)
    if len(payload) < HEADER_BYTES_V2:
        raise TruncatedPayloadError(f"base-layer payload of {len(payload)} bytes is shorter than any header")
    if payload[0] & 0xF0 != MAGIC:
        raise UnknownFormatError(f"not a base-layer payload (first byte 0x{payload[0]:02x})")
    version = payload[0] & 0x0F
    if version not in VERSIONS:
        raise UnknownFormatError(f"base-layer format version {version} is not supported (this decoder reads "
                                 f"{', '.join(map(str, VERSIONS))})")
    need = HEADER_BYTES if version == 1 else HEADER_BYTES_V2
    if len(payload) < need:
        raise TruncatedPayloadError(f"base-layer payload of {len(payload)} bytes is shorter than its {need}-byte header")
    code, step_index = payload[1] >> 4, payload[1] & 0x0F
    if code not in BACKEND_CODES:
        raise UnknownFormatError(f"unknown feature backend code {code}")
    return BaseLayerHeader(version, BACKEND_CODES[code], step_index, payload[2])


class BaseLayerModel:
    """Orthonormal transform + per-component probability model + step ladder.

    Learned on train-people features (:meth:`fit` for format 1's PCA, ``train.base_layer`` for
    format 2's discriminant basis); saved as a small ``.npz`` registered in the model zoo.
    ``family`` is the shape of each component's distribution (``gaussian`` or ``laplace``), chosen
    by measured code length when fitting. ``basis`` and ``sigma`` cover every dimension (``dim``);
    the first ``components`` of them are coded, the others decode as the mean. ``format`` is the
    payload format the model writes (1 or 2).
    """

    def __init__(self, name: str, backend: str, mean: np.ndarray, basis: np.ndarray, sigma: np.ndarray,
                 steps: np.ndarray, family: str = "gaussian", tag: int = 0, default_step: int = 0,
                 cdfs: dict[int, list[np.ndarray]] | None = None, fmt: int = 1, components: int | None = None,
                 about: str = ""):
        if family not in ("gaussian", "laplace"):
            raise ValueError(f"unknown distribution family {family!r}")
        if fmt not in VERSIONS:
            raise ValueError(f"unknown payload format {fmt} (known: {VERSIONS})")
        if len(steps) > 16:
            raise ValueError("the payload has 4 bits for the step index: at most 16 steps")
        if not all(np.isfinite(a).all() for a in (mean, basis, sigma, steps)):
            raise ValueError("a base-layer model has only finite values (every decoded feature is then finite)")
        self.name, self.backend, self.family, self.tag = name, backend, family, tag
        self.default_step = default_step
        self.format = fmt
        self.about = about
        self.mean = np.asarray(mean, np.float64)
        self.basis = np.asarray(basis, np.float64)
        self.sigma = np.asarray(sigma, np.float64)
        self.steps = np.asarray(steps, np.float64)
        self.dim = len(self.mean)
        self.components = self.dim if components is None else int(components)
        if not 0 < self.components <= self.dim or self.basis.shape != (self.dim, self.dim) or len(self.sigma) != self.dim:
            raise ValueError(f"a base-layer model codes 1..{self.dim} components of a {self.dim}x{self.dim} basis")
        if fmt == 1 and self.components != self.dim:
            raise ValueError("format 1 codes every dimension")
        self.coded_basis = np.ascontiguousarray(self.basis[: self.components])
        self.coded_sigma = self.sigma[: self.components]
        self._tables: dict[int, tuple] = {}
        self._shipped = cdfs  # step index -> per-dimension quantized CDFs, from the model file
        self._lock = threading.Lock()
        if cdfs is not None:
            self._check_shipped(cdfs)

    # -- persistence -------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: Path, name: str, tag: int = 0, default_step: int = 0) -> BaseLayerModel:
        """A model file; its integer tables (``cdf_<step>``, ``cdf_lengths_<step>``) are used when it
        has them (files written before they were shipped have not: those tables are computed)."""
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            cdfs = None
            if "cdf_0" in z.files:
                cdfs = {k: np.split(z[f"cdf_{k}"].astype(np.int64), np.cumsum(z[f"cdf_lengths_{k}"])[:-1])
                        for k in range(len(z["steps"]))}
            return cls(name, meta["backend"], z["mean"], z["basis"], z["sigma"], z["steps"], meta["family"], tag,
                       default_step, cdfs, meta.get("format", 1), meta.get("components"), meta.get("about", ""))

    def save(self, target: Path | BinaryIO) -> None:
        """Write the model, with the integer tables of every step, as ``.npz`` to a path or a binary file."""
        meta = {"backend": self.backend, "family": self.family}
        if self.format != 1:  # format 1's files keep the meta they were written with
            meta.update(format=self.format, components=self.components, about=self.about)
        meta = json.dumps(meta)
        tables = {}
        for k in range(len(self.steps)):
            cdfs = self.tables(k)[0]
            tables[f"cdf_{k}"] = np.concatenate(cdfs).astype(np.int32)
            tables[f"cdf_lengths_{k}"] = np.asarray([len(c) for c in cdfs], np.int32)
        with contextlib.ExitStack() as stack:
            f = target if hasattr(target, "write") else stack.enter_context(open(target, "wb"))
            np.savez_compressed(f, mean=self.mean.astype(np.float32), basis=self.basis.astype(np.float32),
                                sigma=self.sigma.astype(np.float32), steps=self.steps.astype(np.float32),
                                meta=np.array(meta), **tables)

    def half_widths(self, step_index: int) -> np.ndarray:
        """Largest ``|q_i|`` of each coded component at one step (about 8 standard deviations)."""
        return np.clip(np.ceil(8 * self.coded_sigma / self.steps[step_index]), 1, MAX_HALF_WIDTH).astype(np.int32)

    def _check_shipped(self, cdfs: dict[int, list[np.ndarray]]) -> None:
        """Shipped tables must be what this model's coder expects: one CDF per component per step, each
        covering ``2 * half + 1`` symbols and the escape symbol, from 0 to ``2**16``, strictly increasing."""
        if sorted(cdfs) != list(range(len(self.steps))):
            raise ValueError(f"the model file has tables for steps {sorted(cdfs)}, its ladder has {len(self.steps)}")
        for k, per_dim in cdfs.items():
            half = self.half_widths(k)
            if len(per_dim) != self.components or any(len(c) != 2 * h + 3 for c, h in zip(per_dim, half)):
                raise ValueError(f"the model file's tables of step {k} do not match its scales and step")
            for c in per_dim:
                if c[0] != 0 or c[-1] != 1 << PRECISION or np.any(np.diff(c) <= 0):
                    raise ValueError(f"a table of step {k} is not a quantized CDF (0 .. 2**{PRECISION}, increasing)")

    @classmethod
    def fit(cls, features: np.ndarray, backend: str, steps: np.ndarray, family: str = "gaussian",
            name: str = "unsaved") -> BaseLayerModel:
        """PCA basis and per-component scale from ``features`` (train people only)."""
        x = np.asarray(features, np.float64)
        mean = x.mean(0)
        cov = np.cov(x - mean, rowvar=False)
        evals, evecs = np.linalg.eigh(cov)
        order = np.argsort(evals)[::-1]
        basis = evecs[:, order].T
        y = (x - mean) @ basis.T
        if family == "gaussian":
            sigma = y.std(0)
        else:  # Laplace scale b = mean |y|; stored as the equivalent std b*sqrt(2)
            sigma = np.abs(y).mean(0) * math.sqrt(2)
        return cls(name, backend, mean, basis, np.maximum(sigma, 1e-6), np.asarray(steps), family)

    # -- transform ---------------------------------------------------------------------------
    # einsum, not ``@``: a 128x128 product is too small for BLAS, whose threads spin for
    # milliseconds on a busy machine where einsum takes microseconds.
    def quantize(self, feature: np.ndarray, step_index: int) -> np.ndarray:
        y = np.einsum("j,ij->i", np.asarray(feature, np.float64) - self.mean, self.coded_basis)
        _, _, _, half = self.tables(step_index)
        return np.clip(np.rint(y / self.steps[step_index]), -half, half).astype(np.int32)

    def dequantize(self, q: np.ndarray, step_index: int) -> np.ndarray:
        """Feature(s) ``mean + P^T (q * step)`` of one (components,) or many (n, components) quantized vectors.

        Many at once is one BLAS product (3x faster than einsum for 256 rows): run BLAS on one
        thread in a busy process (the analysis server does), its threads contend for the cores.
        """
        if np.ndim(q) == 1:
            return (self.mean + np.einsum("i,ij->j", q * self.steps[step_index], self.coded_basis)).astype(np.float32)
        return (self.mean + (q * self.steps[step_index]) @ self.coded_basis).astype(np.float32)

    # -- probability model -------------------------------------------------------------------
    def _cdf(self, scale: float, half: int) -> list[int]:
        """The quantized CDF of one dimension (fitting time only: shipped in the model file)."""
        from compressai._CXX import pmf_to_quantized_cdf
        from scipy import stats

        dist = stats.norm(scale=scale) if self.family == "gaussian" else stats.laplace(scale=scale / math.sqrt(2))
        edges = np.arange(-half, half + 2) - 0.5
        pmf = np.diff(dist.cdf(edges))
        pmf = np.maximum(pmf, 1e-12)
        pmf = pmf / pmf.sum() * (1 - 1e-9)
        return pmf_to_quantized_cdf(pmf.tolist() + [1e-9], PRECISION)

    def tables(self, step_index: int) -> tuple[list[list[int]], list[int], list[int], np.ndarray]:
        """CDFs, their lengths, offsets and half-widths for one step (built once, cached)."""
        if not 0 <= step_index < len(self.steps):
            raise UnknownFormatError(f"step index {step_index} is outside the model's ladder of {len(self.steps)} steps")
        with self._lock:
            if step_index not in self._tables:
                step = self.steps[step_index]
                half = self.half_widths(step_index)
                if self._shipped is not None:
                    cdfs = [c.tolist() for c in self._shipped[step_index]]
                else:  # fitting time: from the floats (needs SciPy and CompressAI)
                    cdfs = [self._cdf(s / step, int(h)) for s, h in zip(self.coded_sigma, half)]
                lengths = [len(c) for c in cdfs]
                offsets = [-int(h) for h in half]
                self._tables[step_index] = (cdfs, lengths, offsets, half)
            return self._tables[step_index]

    def sample(self, n: int, rng: np.random.Generator, chunk: int = 100_000) -> np.ndarray:
        """``n`` synthetic features (float32) from the model's own distribution: its mean plus independent
        components of its scales along its basis (benchmarks and the search index's training draw
        them; ``chunk`` rows at a time bound the float64 temporaries)."""
        out = np.empty((n, self.dim), np.float32)
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            out[start:start + k] = self.mean + (rng.normal(size=(k, self.dim)) * self.sigma) @ self.basis
        return out

    def bits(self, features: np.ndarray, step_index: int) -> float:
        """Ideal code length in bits per feature under this model (for fitting, not for counting)."""
        q = np.stack([self.quantize(f, step_index) for f in features])
        cdfs, _, offsets, _ = self.tables(step_index)
        total = 0.0
        for i in range(self.components):
            c = np.asarray(cdfs[i], np.float64)
            s = q[:, i] - offsets[i]
            total += -np.log2((c[s + 1] - c[s]) / (1 << PRECISION)).sum()
        return total / len(features)


_CORRUPT = {1: "base-layer symbols out of range: the payload is corrupted",
            2: "base-layer body is not one the encoder writes (a symbol out of range, or bytes that re-encoding does "
               "not give back): the payload is truncated or corrupted"}


class BaseLayerCodec:
    """The base-layer codec: ``compress(feature) -> bytes``, ``decompress(bytes) -> DecodedBase``."""

    def __init__(self, model: BaseLayerModel, step_index: int | None = None):
        self.model = model
        if step_index is None:
            step_index = get_settings().base_step
        self.step_index = model.default_step if step_index is None else step_index
        model.tables(self.step_index)  # validates the index

    @property
    def backend(self) -> str:
        return self.model.backend

    def compress(self, feature: np.ndarray) -> bytes:
        feature = np.asarray(feature)
        if feature.shape != (self.model.dim,) or not np.all(np.isfinite(feature)):
            raise FaceCodecError(f"expected a finite feature of shape ({self.model.dim},), got {feature.shape}")
        q = self.model.quantize(feature, self.step_index)
        cdfs, _, offsets, _ = self.model.tables(self.step_index)
        head = header_bytes(self.model, self.step_index)
        if self.model.format == 2:
            body = range_encode(q.tolist(), cdfs, offsets)
            return head + bytes([_crc8(head + body)]) + body
        body = rans_encode(q.tolist(), cdfs, offsets)
        return head + _crc(head + body).to_bytes(2, "big") + body

    def checked_body(self, payload: bytes, header: BaseLayerHeader) -> bytes:
        """The entropy-coded body of ``payload`` once its model, length and checksum are checked."""
        if header.backend != self.model.backend or header.model_tag != self.model.tag:
            raise UnknownModelError(f"payload was coded with model tag {header.model_tag} of {header.backend}, "
                                    f"this codec holds {self.model.name}")
        if header.version != self.model.format:
            raise UnknownModelError(f"payload of format {header.version} names model tag {header.model_tag}, "
                                    f"a model of format {self.model.format} ({self.model.name})")
        if header.version == 2:
            if len(payload) < HEADER_BYTES_V2:
                raise TruncatedPayloadError(f"base-layer payload of {len(payload)} bytes is shorter than its "
                                            f"{HEADER_BYTES_V2}-byte header")
            body = payload[HEADER_BYTES_V2:]
            if len(body) > max_body_bytes(self.model):
                raise CorruptPayloadError(f"base-layer body of {len(body)} bytes is longer than any this model writes")
            if _crc8(payload[:3] + body) != payload[3]:
                raise CorruptPayloadError("base-layer checksum mismatch: the payload is truncated or corrupted")
            if body[-1:] == b"\0":
                raise CorruptPayloadError("base-layer body ends on a zero byte, which the encoder never writes")
            return body
        body = payload[HEADER_BYTES:]
        if len(body) < MIN_BODY_BYTES or len(body) % 4:
            raise TruncatedPayloadError(f"base-layer body of {len(body)} bytes is not a whole rANS stream")
        if len(body) > max_body_bytes(self.model):
            raise CorruptPayloadError(f"base-layer body of {len(body)} bytes is longer than any this model writes")
        if _crc(payload[:3] + body) != int.from_bytes(payload[3:5], "big"):
            raise CorruptPayloadError("base-layer checksum mismatch: the payload is truncated or corrupted")
        return body

    def decode_symbols(self, body: bytes, step_index: int) -> np.ndarray:
        """The quantized components of one body (a component beyond the model's range marks a
        stream no encoder of this model wrote). One stream at a time is numpy's or Python's work
        (about 1 ms for format 1, 0.2 ms for format 2): Numba, which batches need, is not imported
        for it (the edge decodes one base layer per enhancement request, and Numba's import costs
        about 60 MB)."""
        return decode_bodies(self.model, step_index, [body], engine="numpy")[0]

    def decompress(self, payload: bytes) -> DecodedBase:
        header = read_header(payload)
        payload = bytes(payload)
        body = self.checked_body(payload, header)
        q = self.decode_symbols(body, header.step_index)
        if np.any(np.abs(q) > self.model.tables(header.step_index)[3]):
            raise CorruptPayloadError(_CORRUPT[self.model.format])
        feature = self.model.dequantize(q, header.step_index)
        return DecodedBase(feature, header.backend, self.model.name, header.step_index,
                           float(self.model.steps[header.step_index]), len(payload))


def rans_encode(symbols: list[int], cdfs: list[list[int]], offsets: list[int]) -> bytes:
    """The rANS stream of ``symbols`` (one per dimension, dimension ``i`` coded with ``cdfs[i]`` from
    ``offsets[i]``): byte for byte what CompressAI's ``RansEncoder.encode_with_indexes`` writes for
    symbols inside each alphabet (the escape symbol is never needed: quantization clips to it).

    ``rans64.h``: symbols are put in reverse order into a 64-bit state that starts at 2**31; before a
    symbol of frequency ``f`` the state's low 32-bit word is written out (growing downwards) while the
    state is at least ``f << 47``; the final state is flushed as two words. Words are little-endian.
    About 0.1 ms for 128 symbols in plain Python."""
    x = _RANS64_L
    words: list[int] = []
    shift = 64 - PRECISION - 1  # (RANS64_L >> precision) << 32 == 1 << 47
    for i in range(len(symbols) - 1, -1, -1):
        cdf = cdfs[i]
        v = symbols[i] - offsets[i]
        if not 0 <= v < len(cdf) - 2:
            raise FaceCodecError(f"symbol {symbols[i]} of dimension {i} is outside its alphabet")
        start = cdf[v]
        freq = cdf[v + 1] - start
        if x >= freq << shift:
            words.append(x & 0xFFFFFFFF)
            x >>= 32
        x = ((x // freq) << PRECISION) + (x % freq) + start
    words += [x >> 32, x & 0xFFFFFFFF]  # reversed below: low word first
    return np.asarray(words[::-1], "<u4").tobytes()


_TOP = 1 << 24  # the range coder renormalises below this range (one byte out, one byte in)


def range_encode(symbols: list[int], cdfs: list[list[int]], offsets: list[int]) -> bytes:
    """Format 2's body: ``symbols`` (component ``i`` coded with ``cdfs[i]`` from ``offsets[i]``, in
    order) range-coded, ending on a byte.

    A range coder with carry (Subbotin's, in LZMA's form): ``low`` (33 bits, the top one a carry) and
    a 32-bit ``range``; a symbol of start ``c`` and frequency ``f`` out of ``2**16`` makes ``r = range
    >> 16``, ``low += r * c``, ``range = r * f``; a byte goes out whenever ``range < 2**24`` (bytes
    equal to 0xFF wait in ``cache`` until a carry is settled). At the end ``low`` moves to the value of
    ``[low, low + range)`` with the most trailing zero bits and is flushed; the first byte (always 0:
    the code is a fraction below 1) and every zero byte at the end are left out, the decoder reading
    zeros past the end. About 0.3 byte above the ideal code length, in plain Python about 40 us for 44
    components."""
    low, rng, cache, pending = 0, 0xFFFFFFFF, 0, 1
    out = bytearray()

    def shift() -> None:
        nonlocal low, cache, pending
        if low < 0xFF000000 or low >= 1 << 32:
            carry = low >> 32
            out.append((cache + carry) & 0xFF)
            out.extend(bytes([(0xFF + carry) & 0xFF]) * (pending - 1))
            pending, cache = 0, (low >> 24) & 0xFF
        pending += 1
        low = (low & 0x00FFFFFF) << 8

    for i, sym in enumerate(symbols):
        cdf = cdfs[i]
        v = sym - offsets[i]
        if not 0 <= v < len(cdf) - 2:
            raise FaceCodecError(f"symbol {sym} of component {i} is outside its alphabet")
        r = rng >> 16
        low += r * cdf[v]
        rng = r * (cdf[v + 1] - cdf[v])
        while rng < _TOP:
            rng <<= 8
            shift()
    end = low + rng
    for k in range(32, -1, -1):  # the value of the final interval with the most trailing zeros
        value = (low + (1 << k) - 1) >> k << k
        if value < end:
            break
    low = value
    for _ in range(5):
        shift()
    if out[0] != 0:
        raise AssertionError("the range coder's first byte is always zero")
    return bytes(out[1:]).rstrip(b"\0")


def _range_decode_one(body: bytes, cdfs: list[list[int]]) -> list[int] | None:
    """The CDF indexes (symbol + half-width) of one format-2 body, or None when no encoder wrote it
    (a slot outside the table, the escape symbol, or bytes that re-encoding does not give back)."""
    n = len(body)
    code = int.from_bytes(body[:4].ljust(4, b"\0"), "big")
    at = 4
    rng = 0xFFFFFFFF
    out = []
    for cdf in cdfs:
        r = rng >> 16
        slot = code // r
        if slot >= 1 << PRECISION:
            return None
        v = bisect.bisect_right(cdf, slot) - 1
        if v >= len(cdf) - 2:  # the escape symbol: never written
            return None
        code -= r * cdf[v]
        rng = r * (cdf[v + 1] - cdf[v])
        while rng < _TOP:
            rng <<= 8
            code = (code << 8) | (body[at] if at < n else 0)
            at += 1
        out.append(v)
    return out


def header_bytes(model: BaseLayerModel, step_index: int) -> bytes:
    """The first three bytes of every payload of ``model`` at ``step_index`` (magic and version,
    backend and step, model tag): what a facewire.v2 stream's Hello says once for all its faces."""
    return bytes([MAGIC | model.format, (BACKENDS[model.backend].code << 4) | step_index, model.tag])


def wire_body(payload: bytes) -> bytes:
    """What a facewire.v2 stream carries of a payload whose three header bytes its Hello names: the
    rest of it less the checksum, which the server recomputes (:func:`from_wire`)."""
    return payload[HEADER_BYTES:] if payload[0] & 0x0F == 1 else payload[HEADER_BYTES_V2:]


def from_wire(header: bytes, body: bytes) -> bytes:
    """The payload that a facewire.v2 stream's three header bytes (its Hello) and one face's body stand
    for: the header, its checksum (CRC-16 in format 1, CRC-8 in format 2) and the body."""
    if header[0] & 0x0F == 1:
        return header + _crc(header + body).to_bytes(2, "big") + body
    return header + bytes([_crc8(header + body)]) + body


def max_body_bytes(model: BaseLayerModel) -> int:
    """Longest body a model's encoder writes (format 1: the rANS flush and a word per component)."""
    if model.format == 2:  # at most 16 bits (and a little) a component, and the final bytes
        return 2 * model.components + 8
    return 4 * (model.components + 2)


# -- registry access ---------------------------------------------------------------------------
_load_lock = threading.Lock()


@lru_cache(maxsize=None)
def load_model(name: str) -> BaseLayerModel:
    """A registered base-layer model, loaded on first use."""
    from facecodec import zoo

    with _load_lock:
        e = zoo.entry(name)
        if e.kind != KIND:
            raise UnknownModelError(f"{name!r} is a {e.kind} model, not a base-layer model")
        return BaseLayerModel.from_file(zoo.model_path(name), name, e.tag or 0, e.default_step or 0)


def default_model_name(backend: str) -> str:
    """The newest registered base-layer model for ``backend`` (:func:`facecodec.zoo.newest`)."""
    from facecodec import zoo

    try:
        return zoo.newest(KIND, backend).name
    except UnknownModelError:
        raise UnknownModelError(f"no base-layer model is registered for the {backend!r} backend; "
                                "fit one with `python -m train base-layer`") from None


def model_for_tag(backend: str, tag: int) -> str:
    from facecodec import zoo

    for e in zoo.entries(KIND):
        if e.backend == backend and e.tag == tag:
            return e.name
    raise UnknownModelError(f"no base-layer model with tag {tag} is registered for {backend!r}")


@lru_cache(maxsize=None)
def get_codec(backend: str | None = None, step_index: int | None = None) -> BaseLayerCodec:
    """The codec for ``backend`` (default backend from settings) at ``step_index`` (default from settings)."""
    backend = backend or get_settings().feature_backend
    return BaseLayerCodec(load_model(default_model_name(backend)), step_index)


def encode(feature: np.ndarray, backend: str | None = None, step_index: int | None = None) -> bytes:
    """Base-layer payload of one feature."""
    return get_codec(backend, step_index).compress(feature)


def comparable(features: np.ndarray, backend: str | None = None, step_index: int | None = None) -> np.ndarray:
    """Feature(s) as the default codec delivers them (encoded and decoded), float32: what a feature that
    did not come out of a base layer (a photo's, enrolled at the server) must become before it is
    matched against decoded ones. Format 2 decodes into the subspace of its coded components, so a raw
    feature is farther from decoded ones than their own distance says (on LFW at the default threshold:
    3.5% false rejects instead of 1.1%); its round trip is not."""
    codec = get_codec(backend, step_index)
    f = np.asarray(features, np.float32)
    out = np.stack([codec.decompress(codec.compress(x)).feature for x in f.reshape(-1, f.shape[-1])])
    return out.reshape(f.shape)


def decode(payload: bytes) -> DecodedBase:
    """Decode any registered base-layer payload; only :class:`PayloadError` on bad input."""
    header = read_header(payload)
    model = load_model(model_for_tag(header.backend, header.model_tag))
    return BaseLayerCodec(model, header.step_index).decompress(payload)


# -- many payloads at once ---------------------------------------------------------------------
_RANS64_L = 1 << 31  # CompressAI's rans64.h: the lower bound of the state's normalisation interval


class _VectorTables:
    """One step's CDFs as int64 arrays: ``start[i][r]`` and ``freq[i][r]`` of symbol ``r - 1``,
    and all of them end to end (``flat``, dimension ``i`` at ``at[i]``, ``length[i]`` entries)."""

    def __init__(self, cdfs: list[list[int]]):
        self.cdfs = [np.asarray(c, np.int64) for c in cdfs]
        if any(c[0] != 0 or c[-1] != 1 << PRECISION for c in self.cdfs):
            raise ValueError("a quantized CDF runs from 0 to 2**precision")  # so 1 <= r < len: no bound checks
        self.start = [np.concatenate(([0], c[:-1])) for c in self.cdfs]
        self.freq = [np.concatenate(([0], np.diff(c))) for c in self.cdfs]
        self.flat = np.concatenate(self.cdfs)
        self.length = np.asarray([len(c) for c in self.cdfs], np.int64)
        self.at = np.concatenate(([0], np.cumsum(self.length)[:-1])).astype(np.int64)


@lru_cache(maxsize=64)
def _vector_tables(model: BaseLayerModel, step_index: int) -> _VectorTables:
    return _VectorTables(model.tables(step_index)[0])


def _numpy_symbols(t: _VectorTables, words: np.ndarray, ptr: np.ndarray, x: np.ndarray, dim: int) -> np.ndarray:
    """``r`` (the CDF index, symbol + 1) of every dimension of every stream: one numpy step per
    dimension, all streams at once (about 1 ms a call whatever the count, then 3-5 us a stream)."""
    rs = np.empty((dim, len(x)), np.int64)
    for i in range(dim):
        cum = x & 0xFFFF
        r = t.cdfs[i].searchsorted(cum, side="right")
        x = t.freq[i].take(r) * (x >> 16) + (cum - t.start[i].take(r))
        low = x < _RANS64_L
        x = np.where(low, (x << 32) | words.take(ptr), x)
        ptr = ptr + low
        rs[i] = r
    return rs.T


@lru_cache(maxsize=1)
def _compiled_symbols():
    """:func:`_numpy_symbols` compiled by Numba (one loop per stream, no per-call overhead: about
    0.5 us a stream), or None where Numba is not installed. Compiled on first use, cached on disk."""
    try:
        import numba
    except ImportError:
        return None

    def symbols(flat, at, length, words, ptr, x0, dim):  # pragma: no cover - runs compiled
        n = x0.shape[0]
        rs = np.empty((n, dim), np.int64)
        for j in range(n):
            x = x0[j]
            p = ptr[j]
            for i in range(dim):
                cum = x & 0xFFFF
                a = at[i]
                lo, hi = 0, length[i]
                while lo < hi:  # searchsorted(side="right"): the first entry above cum
                    mid = (lo + hi) >> 1
                    if flat[a + mid] <= cum:
                        lo = mid + 1
                    else:
                        hi = mid
                start = flat[a + lo - 1]
                x = (flat[a + lo] - start) * (x >> 16) + (cum - start)
                if x < 2147483648:  # _RANS64_L
                    x = (x << 32) | words[p]
                    p += 1
                rs[j, i] = lo
        return rs

    try:
        return numba.njit(cache=True, nogil=True)(symbols)
    except RuntimeError:  # no writable cache directory (NUMBA_CACHE_DIR): compiled anew in each process
        return numba.njit(nogil=True)(symbols)


def rans_decode_many(model: BaseLayerModel, step_index: int, bodies: list[bytes],
                     engine: str = "auto") -> np.ndarray:
    """Quantized components (``len(bodies)``, dim) of many rANS bodies of one model and step.

    Bit-exact with CompressAI's ``RansDecoder.decode_with_indexes`` (``rans_interface.cpp`` and
    ``rans64.h``: 64-bit state, 32-bit words read little-endian, renormalisation below 2**31,
    16-bit precision, the first CDF entry above the state's low bits names the symbol) on every
    stream :func:`rans_encode` writes, run on all streams at once: compiled by Numba
    (``engine="compiled"``, the default where Numba is installed) or one numpy step per dimension
    (``"numpy"``). Reads past a stream's end see zeros, as CompressAI's zero-padded buffer does.
    Two things no encoder of this model writes mark a stream as corrupt, by a component one beyond
    the model's range in its row (callers refuse those): the escape (bypass) symbol, and a first
    state outside [2**31, 2**63).
    """
    if model.format != 1:
        raise ValueError(f"{model.name} writes format {model.format}, not rANS (format 1)")
    n, dim = len(bodies), model.components
    if n == 0:
        return np.empty((0, dim), np.int64)
    t = _vector_tables(model, step_index)
    width = max(len(b) for b in bodies) // 4 + dim + 2  # a decode reads at most dim + 2 words
    words = np.frombuffer(b"".join(b.ljust(4 * width, b"\0") for b in bodies), "<u4").astype(np.int64)
    base = np.arange(n, dtype=np.int64) * width
    high = words[base + 1]
    wild = high >= (1 << 31)  # the state would not fit an int64: no encoder wrote it
    x = words[base] | (np.where(wild, 0, high) << 32)
    compiled = _compiled_symbols() if engine in ("auto", "compiled") else None
    if compiled is not None:
        rs = compiled(t.flat, t.at, t.length, words, base + 2, x, dim)
    elif engine == "compiled":
        raise RuntimeError("the compiled rANS decoder needs Numba (pip install numba)")
    else:
        rs = _numpy_symbols(t, words, base + 2, x, dim)
    offsets = np.asarray(model.tables(step_index)[2], np.int64)
    q = rs - 1 + offsets
    q[wild, 0] = -offsets[0] + 1  # the escape symbol already decodes one beyond the range
    return q


@lru_cache(maxsize=1)
def _compiled_range():
    """Format 2's batch decoder compiled by Numba: decode every body, re-encode what it read and
    compare (canonical streams only), or None where Numba is not installed."""
    try:
        import numba
    except ImportError:
        return None

    def decode(flat, at, length, data, starts, ends, dim, scratch):  # pragma: no cover - runs compiled
        n = starts.shape[0]
        rs = np.empty((n, dim), np.int64)
        ok = np.ones(n, np.bool_)
        for j in range(n):
            s, e = starts[j], ends[j]
            code = np.int64(0)
            p = s
            for _k in range(4):
                code = (code << 8) | (np.int64(data[p]) if p < e else 0)
                p += 1
            rng = np.int64(0xFFFFFFFF)
            for i in range(dim):
                r = rng >> 16
                slot = code // r
                a = at[i]
                if slot >= 65536:
                    ok[j] = False
                    break
                lo, hi = 0, length[i]
                while lo < hi:  # the first entry above slot
                    mid = (lo + hi) >> 1
                    if flat[a + mid] <= slot:
                        lo = mid + 1
                    else:
                        hi = mid
                v = lo - 1
                if v >= length[i] - 2:
                    ok[j] = False
                    break
                code -= r * flat[a + v]
                rng = r * (flat[a + v + 1] - flat[a + v])
                while rng < 16777216:
                    rng <<= 8
                    code = (code << 8) | (np.int64(data[p]) if p < e else 0)
                    p += 1
                rs[j, i] = v
            if not ok[j]:
                continue
            # re-encode (range_encode) into scratch and compare with the body
            low = np.int64(0)
            rng = np.int64(0xFFFFFFFF)
            cache = np.int64(0)
            pending = 1
            w = 0
            for i in range(dim + 1):
                if i < dim:
                    a = at[i]
                    v = rs[j, i]
                    r = rng >> 16
                    low += r * flat[a + v]
                    rng = r * (flat[a + v + 1] - flat[a + v])
                    shifts = 0
                    while rng < 16777216:
                        rng <<= 8
                        shifts += 1
                else:
                    end = low + rng
                    for k in range(32, -1, -1):
                        value = ((low + (np.int64(1) << k) - 1) >> k) << k
                        if value < end:
                            break
                    low = value
                    shifts = 5
                for _s in range(shifts):
                    if low < 0xFF000000 or low >= 4294967296:
                        carry = low >> 32
                        scratch[w] = (cache + carry) & 0xFF
                        w += 1
                        for _f in range(pending - 1):
                            scratch[w] = (0xFF + carry) & 0xFF
                            w += 1
                        pending = 0
                        cache = (low >> 24) & 0xFF
                    pending += 1
                    low = (low & 0x00FFFFFF) << 8
            while w > 1 and scratch[w - 1] == 0:
                w -= 1
            if w - 1 != e - s:
                ok[j] = False
                continue
            for k in range(e - s):
                if scratch[k + 1] != data[s + k]:
                    ok[j] = False
                    break
        return rs, ok

    try:
        return numba.njit(cache=True, nogil=True)(decode)
    except RuntimeError:  # no writable cache directory (NUMBA_CACHE_DIR): compiled anew in each process
        return numba.njit(nogil=True)(decode)


def range_decode_many(model: BaseLayerModel, step_index: int, bodies: list[bytes], engine: str = "auto") -> np.ndarray:
    """Quantized components (``len(bodies)``, components) of many format-2 bodies of one model and step:
    compiled by Numba (``engine="compiled"``, the default where Numba is installed) or in Python
    (``"numpy"``). A body that :func:`range_encode` would not have written (a slot outside the table,
    the escape symbol, bytes that re-encoding does not give back) gets a component one beyond the
    model's range in its row, as :func:`rans_decode_many` marks a corrupt stream."""
    if model.format != 2:
        raise ValueError(f"{model.name} writes format {model.format}, not the range coder (format 2)")
    n, dim = len(bodies), model.components
    cdfs, _, offsets, half = model.tables(step_index)
    off = np.asarray(offsets, np.int64)
    if n == 0:
        return np.empty((0, dim), np.int64)
    compiled = _compiled_range() if engine in ("auto", "compiled") else None
    if compiled is None and engine == "compiled":
        raise RuntimeError("the compiled range decoder needs Numba (pip install numba)")
    if compiled is not None:
        t = _vector_tables(model, step_index)
        data = np.frombuffer(b"".join(bodies), np.uint8)
        ends = np.cumsum([len(b) for b in bodies]).astype(np.int64)
        starts = ends - np.asarray([len(b) for b in bodies], np.int64)
        scratch = np.zeros(8 * dim + 64, np.int64)
        rs, ok = compiled(t.flat, t.at, t.length, data, starts, ends, dim, scratch)
    else:
        rs = np.zeros((n, dim), np.int64)
        ok = np.ones(n, bool)
        for j, body in enumerate(bodies):
            got = _range_decode_one(bytes(body), cdfs)
            if got is None or range_encode([v + o for v, o in zip(got, offsets)], cdfs, offsets) != bytes(body):
                ok[j] = False
            else:
                rs[j] = got
    q = rs + off
    q[~ok] = 0
    q[~ok, 0] = int(half[0]) + 1
    return q


def decode_bodies(model: BaseLayerModel, step_index: int, bodies: list[bytes], engine: str = "auto") -> np.ndarray:
    """Quantized components of many bodies of one model and step, by the model's payload format."""
    if model.format == 2:
        return range_decode_many(model, step_index, bodies, engine)
    return rans_decode_many(model, step_index, bodies, engine)


_model_names: dict[tuple[str, int], str] = {}


def _model_for(backend: str, tag: int) -> BaseLayerModel:
    name = _model_names.get((backend, tag))
    if name is None:  # only found models are remembered: a model registered later is still seen
        name = _model_names[(backend, tag)] = model_for_tag(backend, tag)
    return load_model(name)


def decode_many(payloads: list[bytes]) -> list[DecodedBase | PayloadError]:
    """Decode many payloads at once: for each, what :func:`decode` returns, or the error it raises.

    Payloads of one model and step are rANS-decoded together (:func:`rans_decode_many`) and
    dequantized together (one matrix product: features equal :func:`decode`'s to within one
    float32 ulp, and in practice bit for bit). Errors are those of :func:`decode`,
    payload by payload; a header is read once per call, each body is checked on its own.
    """
    out: list[DecodedBase | PayloadError | None] = [None] * len(payloads)
    groups: dict[tuple[BaseLayerModel, int], list[tuple[int, bytes, int]]] = {}
    accepted: dict[bytes, tuple[BaseLayerHeader, BaseLayerCodec]] = {}  # header bytes read in this call
    for j, payload in enumerate(payloads):
        try:  # decode()'s checks in decode()'s order, so that an error is decode()'s own
            known = accepted.get(payload[:3]) if type(payload) is bytes and len(payload) >= HEADER_BYTES else None
            if known is None:
                header = read_header(payload)
                payload = bytes(payload)
                known = accepted[payload[:3]] = (header, BaseLayerCodec(_model_for(header.backend, header.model_tag),
                                                                        header.step_index))
            header, codec = known
            body = codec.checked_body(payload, header)
        except PayloadError as e:
            out[j] = e
            continue
        groups.setdefault((codec.model, header.step_index), []).append((j, body, len(payload)))
    for (model, step_index), members in groups.items():
        bodies = [b for _, b, _ in members]
        q = decode_bodies(model, step_index, bodies)
        bad = (np.abs(q) > model.tables(step_index)[3]).any(1)
        features = model.dequantize(q, step_index)
        step = float(model.steps[step_index])
        backend, name = model.backend, model.name
        for k, (j, _, nbytes) in enumerate(members):
            if bad[k]:
                out[j] = CorruptPayloadError(_CORRUPT[model.format])
            else:
                out[j] = DecodedBase(features[k], backend, name, step_index, step, nbytes)
    return out
