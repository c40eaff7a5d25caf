"""A mutation fuzzer for every decoder and for the gRPC message handling (issue 9, "Bad input").

Each target is seeded with valid payloads made by the project's own encoders and fed mutants:
bit flips, interesting byte values, truncations, extensions, deletions, duplicated stretches,
splices of two corpus entries, random headers and pure noise. Every payload here carries a
CRC-16, which would stop almost every mutant at the first check, so half of the mutants get
their checksums recomputed (``fix``) and reach the code behind it: the rANS decoder, the
header-dictionary inflater, the image codecs, the reconstruction network. A mutant whose
outcome (the exception type and message with the numbers taken out, or "ok") was never seen
before joins the corpus, a cheap stand-in for coverage feedback.

Outcomes: the decoder returns, or it raises one of the target's typed errors. Anything else is
a crash (kept with its traceback); an input that takes longer than ``hang_s`` is a hang
(``faulthandler`` dumps every thread's stack and ends the process, so a hang inside C code is
caught too).
"""

from __future__ import annotations

import binascii
import faulthandler
import random
import re
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FACES = ROOT / "tests" / "data" / "faces"
INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0xFE, 0x10, 0x20, 0x40)
MAX_CORPUS = 512
SLOW_S = 1.0  # an input slower than this is counted (not a failure: the machine is shared)


def crc16(data: bytes) -> int:
    return binascii.crc_hqx(data, 0xFFFF)


def with_crc(data: bytes, at: int, covered_after: int) -> bytes:
    """``data`` with the two bytes at ``at`` set to the CRC-16 of ``data[:at] + data[covered_after:]``."""
    if len(data) < at + 2:
        return data
    crc = crc16(data[:at] + data[covered_after:])
    return data[:at] + crc.to_bytes(2, "big") + data[at + 2 :]


# -- checksum fixers, one per payload kind -------------------------------------------------------
def fix_base(data: bytes) -> bytes:
    """Format 1: CRC-16 in bytes 3-4; format 2: CRC-8 in byte 3 (facecodec.base_layer)."""
    if data and data[0] & 0x0F == 2 and len(data) >= 4:
        from facecodec.base_layer import _crc8

        return data[:3] + bytes([_crc8(data[:3] + data[4:])]) + data[4:]
    return with_crc(data, 3, 5)


def fix_enhancement(data: bytes) -> bytes:
    if not data:
        return data
    size = {1: 10, 2: 11}.get(data[0] & 0x0F)
    return data if size is None else with_crc(data, size - 2, size)


def fix_container(data: bytes) -> bytes:
    """Recompute the inner layers' checksums (where the table allows) and the container's."""
    if len(data) < 2 or not 1 <= data[1] <= 15:
        return data
    n = data[1]
    end = 2 + 3 * n
    if len(data) < end + 2:
        return data
    out = bytearray(data)
    pos = end + 2
    for i in range(n):
        kind, length = out[2 + 3 * i], int.from_bytes(out[3 + 3 * i : 5 + 3 * i], "big")
        layer = bytes(out[pos : pos + length])
        if len(layer) == length:
            out[pos : pos + length] = fix_base(layer) if kind == 1 else fix_enhancement(layer)
        pos += length
    return with_crc(bytes(out), end, end + 2)


# -- mutations ---------------------------------------------------------------------------------
def mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    """One to four random edits of ``data``."""
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        op = rng.randrange(11)
        n = len(out)
        if op == 0 and n:  # flip one bit
            i = rng.randrange(n)
            out[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # an interesting byte
            out[rng.randrange(n)] = rng.choice(INTERESTING)
        elif op == 2 and n:  # a random byte
            out[rng.randrange(n)] = rng.randrange(256)
        elif op == 3:  # truncate
            del out[rng.randrange(n + 1) :]
        elif op == 4:  # extend with noise
            out += rng.randbytes(rng.choice((1, 2, 4, 16, 256)))
        elif op == 5 and n:  # delete a stretch
            i = rng.randrange(n)
            del out[i : i + rng.randint(1, 16)]
        elif op == 6 and n:  # duplicate a stretch
            i = rng.randrange(n)
            j = rng.randrange(n + 1)
            out[j:j] = out[i : i + rng.randint(1, 32)]
        elif op == 7 and corpus:  # splice with another corpus entry
            other = rng.choice(corpus)
            out = out[: rng.randrange(n + 1)] + other[rng.randrange(len(other) + 1) :]
        elif op == 8:  # random header
            k = rng.randint(1, 12)
            out[:k] = rng.randbytes(k)
        elif op == 9 and n >= 2:  # a random 16-bit value (lengths, min/max) somewhere
            i = rng.randrange(n - 1)
            out[i : i + 2] = rng.choice((0, 1, 0x7FFF, 0x8000, 0xFFFF, rng.randrange(65536))).to_bytes(2, "big")
        elif op == 10 and rng.random() < 0.05:  # pure noise
            out = bytearray(rng.randbytes(rng.randrange(64)))
    return bytes(out)


def outcome_key(error: BaseException | None) -> str:
    if error is None:
        return "ok"
    text = re.sub(r"0x[0-9a-fA-F]+", "0xN", str(error))
    text = re.sub(r"'[^']*'", "'S'", text)
    return f"{type(error).__name__}: {re.sub(r'[0-9]+', 'N', text)[:80]}"


@dataclass
class Target:
    """A decoder under test: ``run(bytes)`` may only return or raise one of ``allowed``."""

    name: str
    seeds: list[bytes]
    run: Callable[[bytes], object]
    allowed: tuple[type[BaseException], ...]
    fix: Callable[[bytes], bytes] | None = None
    mutate: Callable[[random.Random, bytes, list[bytes]], bytes] | None = None  # a structured mutator


@dataclass
class FuzzReport:
    target: str
    inputs: int = 0
    crashes: int = 0
    hangs: int = 0
    slow: int = 0
    decoded: int = 0
    seconds: float = 0.0
    max_input_ms: float = 0.0
    corpus: int = 0
    outcomes: Counter = field(default_factory=Counter)
    crash_examples: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        top = dict(self.outcomes.most_common(12))
        return {"inputs": self.inputs, "crashes": self.crashes, "hangs": self.hangs, "slow_inputs": self.slow, "decoded_ok": self.decoded,
                "distinct_outcomes": len(self.outcomes), "corpus": self.corpus, "seconds": round(self.seconds, 1),
                "max_input_ms": round(self.max_input_ms, 1), "top_outcomes": top,
                "crash_examples": self.crash_examples[:5]}


def fuzz(target: Target, inputs: int, seed: int = 0, hang_s: float = 20.0, progress=None) -> FuzzReport:
    """Feed ``inputs`` mutants (the seeds themselves first) to ``target``."""
    rng = random.Random(seed)
    corpus = list(target.seeds)
    rep = FuzzReport(target.name)
    t_start = time.perf_counter()
    try:
        for i in range(inputs):
            if i < len(target.seeds):
                data = target.seeds[i]
            else:
                parent = rng.choice(corpus)
                if target.mutate is not None and rng.random() < 0.5:
                    data = target.mutate(rng, parent, corpus)
                else:
                    data = mutate(rng, parent, corpus)
                if target.fix is not None and rng.random() < 0.5:
                    data = target.fix(data)
            faulthandler.dump_traceback_later(hang_s, exit=True)
            t0 = time.perf_counter()
            error: BaseException | None = None
            try:
                target.run(data)
            except target.allowed as e:
                error = e
            except Exception as e:  # a crash: any other exception escaping the decoder
                error = e
                rep.crashes += 1
                if len(rep.crash_examples) < 20:
                    rep.crash_examples.append({"input_hex": data[:256].hex(), "length": len(data),
                                               "error": f"{type(e).__name__}: {e}"[:300],
                                               "traceback": traceback.format_exc()[-1500:]})
            finally:
                faulthandler.cancel_dump_traceback_later()
            dt = time.perf_counter() - t0
            rep.max_input_ms = max(rep.max_input_ms, dt * 1000)
            if dt > hang_s:  # only reachable for a slow input the watchdog did not stop
                rep.hangs += 1
            if dt > SLOW_S:
                rep.slow += 1
            rep.inputs += 1
            key = outcome_key(error)
            if error is None:
                rep.decoded += 1
            if key not in rep.outcomes and len(corpus) < MAX_CORPUS:
                corpus.append(data)
            rep.outcomes[key] += 1
            if progress is not None:
                progress(1)
    finally:
        rep.seconds = time.perf_counter() - t_start
        rep.corpus = len(corpus)
    return rep


# -- seeds ----------------------------------------------------------------------------------------
def sample_features(n: int, seed: int = 0) -> list[np.ndarray]:
    """Features drawn from the registered base-layer model's distribution."""
    from facecodec import base_layer

    model = base_layer.load_model(base_layer.default_model_name("dlib-resnet-128"))
    rng = np.random.default_rng(seed)
    return list(model.sample(n, rng))


def base_seeds() -> list[bytes]:
    from facecodec import base_layer

    model = base_layer.load_model(base_layer.default_model_name("dlib-resnet-128"))
    out = []
    for i, f in enumerate(sample_features(24)):
        out.append(base_layer.encode(f, step_index=i % len(model.steps)))
    return out


def face_crops(n: int = 4) -> list[np.ndarray]:
    """112x112 central crops of committed sample photos."""
    from PIL import Image

    out = []
    for p in sorted(FACES.glob("*/*.jpg"))[:n]:
        rgb = np.asarray(Image.open(p).convert("RGB"))
        out.append(np.ascontiguousarray(rgb[69:181, 69:181]))
    return out


def enhancement_seeds() -> list[tuple[bytes, bytes]]:
    """(enhancement payload, its base layer) for every image codec (the learned ones when
    registered), with and without a predictor and with and without the header dictionary."""
    from facecodec import enhancement

    bases = base_seeds()
    out = []
    from facecodec.image_codecs import CODECS

    codecs = [("jpeg", 50), ("webp", 30), ("jpeg2000", 30), ("avif", 30), ("png", 0)]
    codecs += [(name, CODECS[name].qualities[0]) for name in ("learned", "conditional") if CODECS[name].qualities]
    for i, crop in enumerate(face_crops(2)):
        for j, (codec, q) in enumerate(codecs):
            base = bases[(i * 5 + j) % len(bases)]
            out.append((enhancement.encode(crop, base, codec, q), base))
            out.append((enhancement.encode(crop, None, codec, q, compact=(j % 2 == 0)), base))
    return out + [(p, bases[0]) for p in oversized_image_payloads()]


def oversized_image_payloads() -> list[bytes]:
    """Enhancement payloads whose small image stream declares a large image (decompression bombs),
    in format 2's header and in format 3's: PNG 3000x3000 and JPEG 2000x2000 in each."""
    import io

    from PIL import Image

    from facecodec import enhancement

    out = []
    for version in (2, 3):
        for fmt, code, size in (("PNG", 5, 3000), ("JPEG", 1, 2000)):
            buf = io.BytesIO()
            Image.new("L", (size, size)).save(buf, fmt)
            body = buf.getvalue()
            if version == 2:
                head = enhancement.HEADERS[2].pack(enhancement.MAGIC | 2, code, 0, 50, -10, 10, 0, 0)[:-2]
                out.append(head + crc16(head + body).to_bytes(2, "big") + body)
            else:  # code << 4 | residual | no dictionary, quality, prediction tag, restoration tag, span
                head = bytes([enhancement.MAGIC | 3, code << 4, 50, 0, 0, 10])
                out.append(head + bytes([enhancement._crc8(head + body)]) + body)
    return out


OVERSIZED_IDS = ["fmt2-png-3000", "fmt2-jpeg-2000", "fmt3-png-3000", "fmt3-jpeg-2000"]


def observation_seeds() -> list[bytes]:
    """Serialised EdgeMessages: batches of valid observations, uploads, a hello."""
    from facecodec import enhancement
    from facewire.v1 import ingest_pb2 as pb

    now = int(time.time() * 1000)
    bases = base_seeds()
    msgs = [pb.EdgeMessage(hello=pb.Hello(camera_id="cam-1", agent_version="0.1.0"))]
    for n in (1, 2, 4):
        obs = [pb.FaceObservation(face_id=f"face-{n}-{i}", camera_id="cam-1", capture_time_ms=now - 1000 * i,
                                  box=pb.Box(x1=10, y1=20, x2=110, y2=140),
                                  quality=pb.Quality(probability=0.99, face_size=100, fallback=bool(i % 2)),
                                  base_layer=bases[(n + i) % len(bases)], format_version=1,
                                  feature_backend="dlib-resnet-128", track_id=f"t{i}")
               for i in range(n)]
        msgs.append(pb.EdgeMessage(observations=pb.ObservationBatch(observations=obs)))
    crop = face_crops(1)[0]
    up = enhancement.encode(crop, None, "jpeg", 30)
    msgs.append(pb.EdgeMessage(enhancement=pb.EnhancementUpload(request_id="r-1", face_id="face-1-0",
                                                                status=pb.UPLOAD_STATUS_OK, payload=up)))
    msgs.append(pb.EdgeMessage(enhancement=pb.EnhancementUpload(request_id="r-2", face_id="face-1-0",
                                                                status=pb.UPLOAD_STATUS_EXPIRED, message="evicted")))
    return [m.SerializeToString() for m in msgs]


# -- targets ------------------------------------------------------------------------------------
def base_layer_target() -> Target:
    from facecodec import base_layer
    from facecodec.errors import PayloadError

    return Target("base_layer", base_seeds(), base_layer.decode, (PayloadError,), fix_base)


def enhancement_target() -> Target:
    """``enhancement.decode(payload, base)``: the input is ``len(base) | base | payload`` so the
    base layer a payload predicts from is fuzzed too."""
    from facecodec import enhancement
    from facecodec.errors import PayloadError

    def pack(enh: bytes, base: bytes) -> bytes:
        return bytes([len(base)]) + base + enh

    def unpack(data: bytes) -> tuple[bytes, bytes | None]:
        if not data:
            return b"", None
        k = data[0]
        return data[1 + k :], (data[1 : 1 + k] or None)

    def run(data: bytes) -> object:
        enh, base = unpack(data)
        return enhancement.decode(enh, base)

    def fix(data: bytes) -> bytes:
        if not data:
            return data
        k = data[0]
        return data[:1] + fix_base(data[1 : 1 + k]) + fix_enhancement(data[1 + k :])

    def structured(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
        """Mutate the enhancement payload alone, keeping the base layer in front intact."""
        if not data:
            return data
        k = data[0]
        return data[: 1 + k] + mutate(rng, data[1 + k :], [])

    return Target("enhancement", [pack(e, b) for e, b in enhancement_seeds()], run, (PayloadError,), fix, structured)


def container_target() -> Target:
    """``container.unpack`` then every layer decoded the way the server would: the base layer
    alone and each enhancement layer from the base (``decode_image(layer="full")``)."""
    from facecodec import base_layer, container, enhancement
    from facecodec.errors import PayloadError

    def run(data: bytes) -> object:
        face = container.unpack(data)
        base_layer.decode(face.base)
        for e in face.enhancements:
            enhancement.decode(e, face.base)
        return face

    seeds = []
    enh = enhancement_seeds()
    for i in range(0, len(enh), 3):
        e, b = enh[i]
        extra = [enh[(i + 1) % len(enh)][0]] if i % 2 else []
        seeds.append(container.pack(container.ScalableFace(b, [e, *extra])))
    seeds.append(container.pack(container.ScalableFace(enh[0][1], [])))
    return Target("container", seeds, run, (PayloadError,), fix_container)


def grpc_messages_target() -> Target:
    """What the server does with the bytes of one ``EdgeMessage`` read from a stream: parse it,
    validate every observation (the base layer is decoded there), check an upload's face id and
    enhancement header (``grpc_service.IngestServicer``)."""
    from google.protobuf.message import DecodeError

    from analysis_server.validation import ValidationFailure, check_id, validate_observation
    from facecodec import enhancement
    from facecodec.errors import PayloadError
    from facewire.v1 import ingest_pb2 as pb

    retention_ms = 7 * 24 * 3600 * 1000

    def run(data: bytes) -> object:
        msg = pb.EdgeMessage.FromString(data)
        kind = msg.WhichOneof("kind")
        if kind == "observations":
            out, now = [], int(time.time() * 1000)
            for o in msg.observations.observations:
                try:
                    out.append(validate_observation(o, "cam-1", now, retention_ms))
                except ValidationFailure:
                    pass  # a per-observation rejection; the batch goes on
            return out
        if kind == "enhancement":
            check_id("face_id", msg.enhancement.face_id)
            if msg.enhancement.status == pb.UPLOAD_STATUS_OK:
                return enhancement.read_header(msg.enhancement.payload)
        return msg

    return Target("grpc_messages", observation_seeds(), run, (DecodeError, ValidationFailure, PayloadError),
                  None, structured_message_mutation)


def structured_message_mutation(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    """Parse an EdgeMessage seed and set one field to a hostile value (the bytes still parse)."""
    from google.protobuf.message import DecodeError

    from facewire.v1 import ingest_pb2 as pb

    try:
        msg = pb.EdgeMessage.FromString(data)
    except DecodeError:
        return mutate(rng, data, corpus)
    floats = (float("nan"), float("inf"), -float("inf"), -1.0, 0.0, 1e300, -1e-300, 3.4e38, 2.0)
    ints = (0, -1, 1, 2**63 - 1, -(2**63), 2**31, int(time.time() * 1000) + 10**9)
    strings = ("", "a" * 200, "../../etc/passwd", "face id", "\u00e9\u0000", "x:y@z", "-lead", "ok-id")
    kind = msg.WhichOneof("kind")
    if kind == "observations" and msg.observations.observations:
        obs = msg.observations.observations
        o = obs[rng.randrange(len(obs))]
        choice = rng.randrange(10)
        if choice == 0:
            o.face_id = rng.choice(strings)
        elif choice == 1:
            o.camera_id = rng.choice(strings + ("cam-1", "cam-2"))
        elif choice == 2:
            o.capture_time_ms = rng.choice(ints)
        elif choice == 3:
            setattr(o.box, rng.choice(("x1", "y1", "x2", "y2")), rng.choice(floats))
        elif choice == 4:
            setattr(o.quality, rng.choice(("probability", "face_size")), rng.choice(floats))
        elif choice == 5:
            o.track_id = rng.choice(strings)
        elif choice == 6:
            o.format_version = rng.choice((0, 1, 2, 255, 2**32 - 1))
        elif choice == 7:
            o.feature_backend = rng.choice(("", "dlib-resnet-128", "facenet-vggface2-512", "nope"))
        elif choice == 8:
            o.base_layer = fix_base(mutate(rng, bytes(o.base_layer), []))
        else:
            obs.add().CopyFrom(o)  # a duplicate face id in one batch
    elif kind == "enhancement":
        u = msg.enhancement
        choice = rng.randrange(4)
        if choice == 0:
            u.face_id = rng.choice(strings)
        elif choice == 1:
            u.status = rng.randrange(-2, 8)
        else:
            u.payload = fix_enhancement(mutate(rng, bytes(u.payload), []))
    else:
        msg.hello.camera_id = rng.choice(strings)
        msg.hello.agent_version = rng.choice(strings)
    return msg.SerializeToString()


TARGETS: dict[str, Callable[[], Target]] = {
    "base_layer": base_layer_target,
    "enhancement": enhancement_target,
    "container": container_target,
    "grpc_messages": grpc_messages_target,
}


def main(argv: list[str] | None = None) -> int:  # a quick way to fuzz one target by hand
    import argparse

    p = argparse.ArgumentParser(description="fuzz one target and print its report")
    p.add_argument("target", choices=sorted(TARGETS))
    p.add_argument("--inputs", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    rep = fuzz(TARGETS[a.target](), a.inputs, a.seed)
    import json

    print(json.dumps(rep.summary(), indent=2))
    return 1 if rep.crashes or rep.hangs else 0


if __name__ == "__main__":
    sys.exit(main())
