"""MTCNN (Zhang et al. 2016) in numpy around the three converted networks.

The same cascade as facenet-pytorch's ``detect_face`` (whose weights were converted to ONNX by
``python -m train runtime-models``), step for step, for one image: an image pyramid from
``12 / min_face_size`` down by ``factor``, P-Net on every level (candidates above the first
threshold, non-maximum suppression per level at IoU 0.5, then over all levels at 0.7), boxes made
square and cut out, R-Net on 24x24 cut-outs (second threshold, NMS 0.7), O-Net on 48x48 ones (third
threshold, landmarks, NMS 0.7 over the smaller box).

Resampling (the pyramid and the cut-outs) is OpenCV's area interpolation by default (``fast``). With
``resample="exact"`` it is PyTorch's ``area`` interpolation (an adaptive average pool, computed with
cumulative sums): the networks then see the pixels facenet-pytorch gives them, and boxes and landmarks
agree with it to about 1e-4 px, which is how the conversion is checked (``python -m train
runtime-models``). Exact resampling is ten times slower than the networks themselves on a textured
720p frame (350 ms against 22, measured); OpenCV's weighs partial pixels instead of PyTorch's
whole-pixel bins, which moves boxes by a fraction of a pixel (the detector's model card gives the
figures, and LFW accuracy measured through it).

Where facenet-pytorch would fail on a box whose cut-out is empty (it then mismatches boxes and
network outputs), such a box is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PNET_STRIDE, PNET_CELL = 2, 12
NORMALISE = 0.0078125  # (pixel - 127.5) / 128


@dataclass
class Found:
    """Faces in one image: ``boxes`` (n, 4) x1 y1 x2 y2, ``probs`` (n,), ``points`` (n, 5, 2), best first."""

    boxes: np.ndarray
    probs: np.ndarray
    points: np.ndarray

    @classmethod
    def empty(cls) -> Found:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))


def area_resize(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """``image`` (H, W, C) averaged over PyTorch's adaptive bins to (out_h, out_w, C), float32.

    Bin ``i`` of ``n`` over ``size`` pixels runs from ``floor(i * size / n)`` to
    ``ceil((i + 1) * size / n)`` (``torch.nn.functional.interpolate(mode="area")``)."""
    x = image.astype(np.float64, copy=False)
    x = _pool_axis(x, out_h, 0)
    return _pool_axis(x, out_w, 1).astype(np.float32)


def _pool_axis(x: np.ndarray, n: int, axis: int) -> np.ndarray:
    size = x.shape[axis]
    i = np.arange(n)
    start = (i * size) // n
    end = -((-(i + 1) * size) // n)
    if size % n == 0 and np.all(end - start == size // n):  # whole bins: a reshape and a mean
        shape = list(x.shape)
        shape[axis : axis + 1] = [n, size // n]
        return x.reshape(shape).mean(axis + 1)
    c = np.cumsum(x, axis=axis)
    c = np.concatenate([np.zeros_like(np.take(c, [0], axis=axis)), c], axis=axis)
    sums = np.take(c, end, axis=axis) - np.take(c, start, axis=axis)
    count = (end - start).astype(np.float64)
    return sums / (count[:, None, None] if axis == 0 else count[None, :, None])


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first.

    ``union``: torchvision's ``nms`` (IoU above ``threshold`` suppressed, areas without the +1);
    ``min``: facenet-pytorch's numpy NMS with the "Min" overlap (intersection over the smaller box,
    areas with the +1 pixel)."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    x1, y1, x2, y2 = (boxes[:, k].astype(np.float64) for k in range(4))
    plus = 1.0 if method == "min" else 0.0
    area = (x2 - x1 + plus) * (y2 - y1 + plus)
    order = np.argsort(-scores, kind="stable") if method == "union" else np.argsort(scores, kind="stable")[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + plus)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + plus)
        inter = w * h
        if method == "min":
            overlap = inter / np.minimum(area[i], area[rest])
            order = rest[overlap <= threshold]
        else:
            overlap = inter / (area[i] + area[rest] - inter)
            order = rest[overlap <= threshold]
    return np.asarray(keep, np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """facenet-pytorch's ``rerec``: each box made square about its centre (side = the longer side)."""
    out = boxes.copy()
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """facenet-pytorch's ``bbreg``: box corners moved by the regression, in units of the box size (+1)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, 0] = boxes[:, 0] + reg[:, 0] * w
    out[:, 1] = boxes[:, 1] + reg[:, 1] * h
    out[:, 2] = boxes[:, 2] + reg[:, 2] * w
    out[:, 3] = boxes[:, 3] + reg[:, 3] * h
    return out


def cv_resize(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """OpenCV's area interpolation (bilinear when enlarging), float32."""
    import cv2

    interpolation = cv2.INTER_AREA if out_h <= image.shape[0] and out_w <= image.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(image, (out_w, out_h), interpolation=interpolation).astype(np.float32)


RESAMPLERS = {"exact": area_resize, "fast": cv_resize}


def _batched(network, crops: np.ndarray) -> list[np.ndarray]:
    """``network`` on ``crops`` padded to a power-of-two batch (fewer distinct shapes for the runtime's
    per-shape kernel cache), outputs cut back to the crops."""
    n = len(crops)
    size = 1 << max(0, (n - 1).bit_length())
    if size != n:
        crops = np.concatenate([crops, np.zeros((size - n, *crops.shape[1:]), crops.dtype)])
    return [o[:n] for o in network(crops)]


def _cutouts(image: np.ndarray, boxes: np.ndarray, size: int, resize=area_resize) -> tuple[np.ndarray, np.ndarray]:
    """Normalised (n, 3, size, size) cut-outs of ``boxes`` (clipped to the image, as facenet-pytorch's
    ``pad``), and the indices of the boxes whose cut-out is not empty."""
    h, w = image.shape[:2]
    b = np.trunc(boxes[:, :4]).astype(np.int64)
    x, y = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
    ex, ey = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
    ok = np.flatnonzero((ey > y - 1) & (ex > x - 1))
    out = np.empty((len(ok), size, size, 3), np.float32)
    for j, k in enumerate(ok):
        out[j] = resize(image[y[k] - 1 : ey[k], x[k] - 1 : ex[k]], size, size)
    return np.ascontiguousarray(((out - 127.5) * NORMALISE).transpose(0, 3, 1, 2)), ok


class Mtcnn:
    """The cascade around three callables ``pnet``, ``rnet``, ``onet`` (NCHW float32 in, the networks'
    outputs out, as :class:`facecodec.runtime.Network` gives them)."""

    def __init__(self, pnet, rnet, onet, min_face_size: float = 20, thresholds=(0.6, 0.7, 0.7), factor: float = 0.709,
                 resample: str = "fast"):
        self.pnet, self.rnet, self.onet = pnet, rnet, onet
        self.resize = RESAMPLERS[resample]
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(thresholds)
        self.factor = float(factor)

    @classmethod
    def from_registry(cls, name: str | None = None, runtime: str | None = None, **kwargs) -> Mtcnn:
        from facecodec import zoo
        from facecodec.runtime import registered

        name = name or zoo.newest("detector").name
        return cls(*(registered(name, m, runtime) for m in ("pnet", "rnet", "onet")), **kwargs)

    def scales(self, h: int, w: int) -> list[float]:
        m = 12.0 / self.min_face_size
        minl = min(h, w) * m
        scales, s = [], m
        while minl >= 12:
            scales.append(s)
            s *= self.factor
            minl *= self.factor
        return scales

    def detect(self, image: np.ndarray) -> Found:
        """Faces in ``image`` (H, W, 3 uint8 RGB)."""
        h, w = image.shape[:2]
        boxes = self._stage1(image, h, w)
        if len(boxes):
            boxes = self._stage2(image, boxes)
        if len(boxes) == 0:
            return Found.empty()
        return self._stage3(image, boxes)

    def _stage1(self, image: np.ndarray, h: int, w: int) -> np.ndarray:
        found = []
        first = None
        for scale in self.scales(h, w):
            size = (int(h * scale + 1), int(w * scale + 1))
            if self.resize is area_resize or first is None:
                level = first = self.resize(image, *size)
            else:  # fast: later levels from the first one (one pass over the full frame per pyramid)
                level = self.resize(first, *size)
            x = np.ascontiguousarray(((level - 127.5) * NORMALISE).transpose(2, 0, 1)[None])
            reg, prob = self.pnet(x)
            ys, xs = np.nonzero(prob[0, 1] >= self.thresholds[0])
            if len(ys) == 0:
                continue
            score = prob[0, 1, ys, xs]
            cell = np.stack([xs, ys], 1).astype(np.float32)
            q1 = np.floor((PNET_STRIDE * cell + 1) / scale)
            q2 = np.floor((PNET_STRIDE * cell + PNET_CELL) / scale)
            b = np.concatenate([q1, q2, score[:, None], reg[0][:, ys, xs].T], 1).astype(np.float32)
            found.append(b[nms(b[:, :4], b[:, 4], 0.5)])
        if not found:
            return np.zeros((0, 5), np.float32)
        b = np.concatenate(found)
        b = b[nms(b[:, :4], b[:, 4], 0.7)]
        regw, regh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        refined = np.stack([b[:, 0] + b[:, 5] * regw, b[:, 1] + b[:, 6] * regh,
                            b[:, 2] + b[:, 7] * regw, b[:, 3] + b[:, 8] * regh, b[:, 4]], 1)
        return _square(refined)

    def _stage2(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        crops, ok = _cutouts(image, boxes, 24, self.resize)
        if len(ok) == 0:
            return np.zeros((0, 5), np.float32)
        boxes = boxes[ok]
        reg, prob = _batched(self.rnet, crops)
        keep = prob[:, 1] > self.thresholds[1]
        boxes = np.concatenate([boxes[keep, :4], prob[keep, 1:2]], 1)
        reg = reg[keep]
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
        return _square(_regress(boxes[pick], reg[pick]))

    def _stage3(self, image: np.ndarray, boxes: np.ndarray) -> Found:
        crops, ok = _cutouts(image, boxes, 48, self.resize)
        if len(ok) == 0:
            return Found.empty()
        boxes = boxes[ok]
        reg, points, prob = _batched(self.onet, crops)
        keep = prob[:, 1] > self.thresholds[2]
        boxes = np.concatenate([boxes[keep, :4], prob[keep, 1:2]], 1)
        reg, points = reg[keep], points[keep]
        w = boxes[:, 2] - boxes[:, 0] + 1
        h = boxes[:, 3] - boxes[:, 1] + 1
        px = w[:, None] * points[:, :5] + boxes[:, 0:1] - 1
        py = h[:, None] * points[:, 5:10] + boxes[:, 1:2] - 1
        points = np.stack([px, py], 2)
        boxes = _regress(boxes, reg)
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7, "min")
        boxes, points = boxes[pick], points[pick]
        order = np.argsort(-boxes[:, 4], kind="stable")
        return Found(boxes[order, :4].astype(np.float32), boxes[order, 4].astype(np.float32),
                     points[order].astype(np.float32))
