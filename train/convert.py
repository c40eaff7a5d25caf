"""``python -m train runtime-models``: convert the networks the services run to ONNX, check, register.

The services run no PyTorch (:mod:`facecodec.runtime`); this command, on the training side where
PyTorch is installed, converts:

- **MTCNN** (facenet-pytorch's P-, R- and O-Net weights, which ship in that package) to one zip of
  three ONNX files, kind ``detector`` (``mtcnn-<hash>.zip``);
- **dlib's descriptor** (``face_recognition_models``' ResNet, read by :mod:`facecodec.frontend.dlib_torch`)
  to ONNX, kind ``descriptor`` (``dlib128-<hash>.onnx``);
- every **reconstruction** model still registered as a PyTorch file: the display network to ONNX,
  the ridge prediction head to ``.npz`` (a matrix needs no runtime). They keep their registry tag,
  so enhancement payloads that name it decode as before, and the ``.pt`` entry is dropped.

Each converted network is run beside its source on the same inputs, by both runtimes, and refused
(:class:`ConversionError`) when an output differs by more than :data:`TOLERANCE`; the largest
differences go to the model card. The detector is also compared end to end: boxes, probabilities and
landmarks of :class:`facecodec.frontend.mtcnn.Mtcnn` on the committed sample faces against
facenet-pytorch's ``MTCNN.detect``.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from facecodec import zoo

log = logging.getLogger(__name__)
TOLERANCE = 1e-4  # largest accepted absolute difference of any network output (features are ~0.1 in size)
BOX_TOLERANCE = 0.05  # pixels: end-to-end MTCNN boxes and landmarks against facenet-pytorch's
SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "data" / "faces"
OPSET = 17
LOG = Path(__file__).resolve().parent / "logs" / "runtime_models.json"  # the measured differences, per model


class ConversionError(RuntimeError):
    """A converted network does not reproduce its source."""


def _export(module, example, inputs: list[str], outputs: list[str], dynamic: dict) -> bytes:
    import torch

    buf = io.BytesIO()
    with torch.inference_mode():
        torch.onnx.export(module, example, buf, input_names=inputs, output_names=outputs, dynamic_axes=dynamic,
                          opset_version=OPSET, dynamo=False)
    return buf.getvalue()


def _compare(onnx: bytes, module, cases: list[tuple], name: str) -> dict[str, float]:
    """Largest |converted - source| over ``cases`` (tuples of numpy inputs), per runtime."""
    import torch

    from facecodec.runtime import RUNTIMES, Network

    worst = {}
    for runtime in RUNTIMES:
        net = Network(onnx, name, runtime)
        diff = 0.0
        for case in cases:
            with torch.inference_mode():
                ref = module(*[torch.from_numpy(x) for x in case])
            ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
            out = net(*case)
            diff = max(diff, *(float(np.abs(a - b.numpy()).max()) for a, b in zip(out, ref)))
        if not diff <= TOLERANCE:
            raise ConversionError(f"{name} run by {runtime} differs from its source by {diff:.2e} (> {TOLERANCE})")
        worst[runtime] = diff
    log.info("%s: largest difference to the source %s", name, worst)
    return worst


def _sample_images() -> list[np.ndarray]:
    from facecodec.images import load_rgb

    return [load_rgb(p) for p in sorted(SAMPLE.glob("*/*.jpg"))]


# -- MTCNN -----------------------------------------------------------------------------------------
def convert_mtcnn() -> tuple[bytes, dict]:
    import torch
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    rng = np.random.default_rng(0)
    nets = {"pnet": PNet().eval(), "rnet": RNet().eval(), "onet": ONet().eval()}
    outputs = {"pnet": ["reg", "prob"], "rnet": ["reg", "prob"], "onet": ["reg", "points", "prob"]}
    sizes = {"pnet": [(1, 3, 216, 384), (1, 3, 37, 52), (1, 3, 12, 12)], "rnet": [(1, 3, 24, 24), (40, 3, 24, 24)],
             "onet": [(1, 3, 48, 48), (7, 3, 48, 48)]}
    buf, diffs = io.BytesIO(), {}
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, net in nets.items():
            dynamic = {"x": {0: "n", 2: "h", 3: "w"} if name == "pnet" else {0: "n"}}
            dynamic.update({o: {0: "n"} for o in outputs[name]})
            onnx = _export(net, (torch.zeros(sizes[name][0]),), ["x"], outputs[name], dynamic)
            cases = [(rng.uniform(-1, 1, s).astype(np.float32),) for s in sizes[name]]
            diffs[name] = _compare(onnx, net, cases, f"mtcnn/{name}")
            info = zipfile.ZipInfo(f"{name}.onnx", date_time=(2020, 1, 1, 0, 0, 0))  # same bytes, same hash
            z.writestr(info, onnx, zipfile.ZIP_DEFLATED)
    return buf.getvalue(), diffs


def compare_detections(detector_name: str) -> dict:
    """MTCNN end to end on the sample faces: ours (both runtimes) against facenet-pytorch's."""
    from facenet_pytorch import MTCNN

    from facecodec.frontend.mtcnn import Mtcnn

    theirs = MTCNN(min_face_size=20, keep_all=True, post_process=False, device="cpu")
    images = _sample_images()
    out = {}
    for runtime in ("openvino", "onnxruntime"):
        ours = Mtcnn.from_registry(detector_name, runtime=runtime, resample="exact")
        worst_box = worst_point = worst_prob = 0.0
        count_mismatch = 0
        for image in images:
            boxes, probs, points = theirs.detect(image, landmarks=True)
            found = ours.detect(image)
            n = 0 if boxes is None else len(boxes)
            if n != len(found.boxes):
                count_mismatch += 1
                continue
            if n == 0:
                continue
            order = np.argsort(-probs)
            worst_box = max(worst_box, float(np.abs(found.boxes - boxes[order]).max()))
            worst_point = max(worst_point, float(np.abs(found.points - points[order]).max()))
            worst_prob = max(worst_prob, float(np.abs(found.probs - probs[order]).max()))
        if count_mismatch or worst_box > BOX_TOLERANCE or worst_point > BOX_TOLERANCE:
            raise ConversionError(f"MTCNN run by {runtime}: {count_mismatch} images with another face count, "
                                  f"boxes off by up to {worst_box:.3f} px, landmarks {worst_point:.3f} px")
        out[runtime] = {"images": len(images), "box_px": worst_box, "landmark_px": worst_point, "probability": worst_prob}
    log.info("MTCNN end to end against facenet-pytorch: %s", out)
    return out


# -- dlib's descriptor -----------------------------------------------------------------------------
def convert_descriptor() -> tuple[bytes, dict]:
    import torch

    from facecodec.frontend import dlib_torch
    from facecodec.frontend.features import DlibResnet128

    net = dlib_torch.load()
    rng = np.random.default_rng(1)
    onnx = _export(net, (torch.zeros((1, 150, 150, 3), dtype=torch.uint8),), ["chips"], ["features"],
                   {"chips": {0: "n"}, "features": {0: "n"}})
    dlib = DlibResnet128(engine="dlib")
    chips = [dlib.align(img, d) for img in _sample_images()[:6] for d in _detections(img)[:1]]
    cases = [(rng.integers(0, 256, (1, 150, 150, 3), dtype=np.uint8),), (np.stack(chips),)]
    diffs = _compare(onnx, net, cases, "dlib128")
    from facecodec.runtime import Network

    # and against dlib itself, which the PyTorch port was checked against
    reference = dlib.embed_dlib(chips)
    to_dlib = {rt: float(np.linalg.norm(Network(onnx, "dlib128", rt)(np.stack(chips))[0] - reference, axis=1).max())
               for rt in ("openvino", "onnxruntime")}
    return onnx, {"to_pytorch_port": diffs, "euclidean_to_dlib": to_dlib}


def _detections(image):
    from facenet_pytorch import MTCNN

    from facecodec.frontend.detect import Detection

    boxes, probs, points = MTCNN(keep_all=True, post_process=False, device="cpu").detect(image, landmarks=True)
    if boxes is None:
        return []
    return [Detection(tuple(map(float, b)), float(p), np.asarray(pt, np.float32)) for b, p, pt in zip(boxes, probs, points)]


# -- reconstruction --------------------------------------------------------------------------------
def reconstruction_file(net, config: dict) -> tuple[bytes, str, dict]:
    """(file bytes, suffix, differences) of a PyTorch reconstruction network (:mod:`train.networks`)
    in the form the services run: the linear head as ``.npz`` (weights in half precision), any other
    network as ONNX."""
    import torch

    from facecodec import reconstruction
    from train import networks

    net = net.eval()
    rng = np.random.default_rng(2)
    feats = rng.normal(0, 0.1, (8, int(config.get("dim", 128)))).astype(np.float32)
    if config.get("type") == "linear":
        arrays = {k.replace(".", "_"): v.float().numpy() for k, v in net.state_dict().items()}
        arrays["map_weight"] = arrays["map_weight"].astype(np.float16)
        arrays["config"] = np.array(json.dumps(config))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        head = reconstruction.LinearHead.from_arrays(dict(np.load(io.BytesIO(buf.getvalue()))))
        with torch.inference_mode():
            net.map.weight.data = torch.from_numpy(arrays["map_weight"].astype(np.float32))  # what is shipped
            ref = networks.to_image(net(torch.from_numpy(feats)))
        diff = int(np.abs(head(feats).astype(int) - ref.astype(int)).max())
        if diff > 1:
            raise ConversionError(f"the linear head as numpy differs from PyTorch by {diff} levels")
        return buf.getvalue(), ".npz", {"pixel_levels": diff}
    onnx = _export(net, (torch.from_numpy(feats[:1]),), ["features"], ["face"], {"features": {0: "n"}, "face": {0: "n"}})
    return onnx, ".onnx", _compare(onnx, net, [(feats[:1],), (feats,)], "reconstruction")


def convert_registered_pytorch() -> dict:
    """Every reconstruction model registered as a PyTorch file, replaced by its runtime form under the
    same tag (so payloads that name it decode as before)."""
    from train import networks

    report = {}
    for e in zoo.entries("reconstruction"):
        if not e.file.endswith(".pt"):
            continue
        config, state = networks.load_state(zoo.model_path(e.name))
        net = networks.build(config)
        net.load_state_dict(state)
        data, suffix, diffs = reconstruction_file(net, config)
        zoo.unregister(e.name)
        new = zoo.add(data, e.name.rsplit("-", 1)[0], suffix, "reconstruction", e.card, preferred_tag=e.tag,
                      backend=e.backend, head=e.head)
        if new.tag != e.tag:
            raise ConversionError(f"{new.name} got tag {new.tag}, not {e.tag}: payloads would name another model")
        (zoo.PACKAGE_MODEL_DIR / e.file).unlink(missing_ok=True)
        report[new.name] = {"from": e.name, **diffs}
    return report


def main(args) -> None:
    data, diffs = convert_mtcnn()
    mtcnn = zoo.add(data, "mtcnn", ".zip", "detector", "mtcnn.md", preferred_tag=1)
    diffs["end_to_end"] = compare_detections(mtcnn.name)
    data, ddiffs = convert_descriptor()
    desc = zoo.add(data, "dlib128", ".onnx", "descriptor", "dlib128.md", preferred_tag=1, backend="dlib-resnet-128")
    report = {mtcnn.name: diffs, desc.name: ddiffs, **convert_registered_pytorch()}
    LOG.parent.mkdir(exist_ok=True)
    previous = json.loads(LOG.read_text()) if LOG.exists() else {}
    LOG.write_text(json.dumps({**previous, **report}, indent=2) + "\n")
    print(json.dumps(report, indent=2))
