"""The face-side test-time steps around the network (paper §3, steps a–d and f–h).

:class:`FaceAligner` detects (:mod:`deid_core.face.detect`), aligns to the averaged face
(:mod:`deid_core.face.template`), calls the network and puts the result back:

c. a least-squares similarity transform from all 68 landmarks to the template;
d. the face is warped into a ``size``×``size`` crop (``cv2.warpAffine``, bilinear, reflected border);
e. the network: any callable ``net(crops uint8 N×S×S×3) -> (images uint8 N×S×S×3,
   masks float32 N×S×S in [0, 1])``, called once per frame for all faces
   (:meth:`deid_core.pipeline.Deidentifier.crop_fn` binds the trained generator); a warp
   head may add ``fields`` float32 N×S×S×3 (flow x, y in crop pixels; luma change in grey
   levels), returning a triple;
f. image and mask are warped back with the inverse transform (mask border 0); with fields
   the generated face is instead resampled from the frame itself at full resolution
   (:func:`warp_frame`: the crop's flow mapped into frame coordinates, ``cv2.remap``);
g. per pixel ``out = m·generated + (1 − m)·input``;
h. the result is merged only inside the convex hull of the 68 landmarks, feathered
   *inside* the hull over ``feather × face size`` pixels, so every pixel outside the hull
   (and on its rasterised boundary) is exactly unchanged.

Command line: ``deid align IN OUT`` (one aligned crop + landmarks JSON, :func:`align_file`).
Figures/timings: ``scripts/figure_align.py``, ``benchmarks/bench_align.py``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.face.detect import (AlignConfig, Face, YuNetDetector, landmark_check, obscure,
                                   yunet_to_dlib_box)
from deid_core.face.image_io import IMAGE_SUFFIXES, read_image, to_rgb_uint8, write_image
from deid_core.face.template import square_box, apply_affine, grow_box, template_landmarks, umeyama


log = logging.getLogger(__name__)


#: step e: crops → (images, masks) or, for a warp head, (images, masks, fields)
CropFn = Callable[[np.ndarray], tuple[np.ndarray, ...]]


class FaceAligner:
    """Detect, align, warp, and paste back faces (paper §3 a–d, f–h).

    Model files are loaded lazily, once per object. Frames (the ``frame`` argument of every
    method, and the frames returned by :meth:`paste` / :meth:`process`) are uint8 in
    ``config.order`` -- RGB by default, BGR for OpenCV callers -- converted by
    :func:`to_rgb_uint8` (grayscale/RGBA accepted). Crops (:meth:`warp`) and the network's
    images are always RGB.
    """

    def __init__(self, config: AlignConfig | None = None, **overrides: Any) -> None:
        config = config or AlignConfig()
        self.config = dataclasses.replace(config, **overrides) if overrides else config
        self.size = int(self.config.size)
        #: the privacy check of :meth:`process` (None: off): ``check(input, output, face)`` is
        #: true when a generated face is still the input's person; that face is then obscured
        #: (:class:`deid_core.pipeline.IdentityCheck`, RGB frames)
        self.check: Callable[[np.ndarray, np.ndarray, Face], bool] | None = None
        self._template: np.ndarray | None = None
        self._detector: Any = None
        self._predictor: Any = None

    # -- template and model files (lazy) -------------------------------------------------
    @property
    def template(self) -> np.ndarray:
        """The averaged face's 68 points in this aligner's crop (:func:`template_landmarks`)."""
        if self._template is None:
            self._template = template_landmarks(self.size, self.config.margin)
        return self._template

    @property
    def predictor(self) -> Any:
        if self._predictor is None:
            import dlib  # not on the GPU image (scripts/gpu/importguard.py)
            self._predictor = dlib.shape_predictor(
                str(paths.dlib_model("shape_predictor_68_face_landmarks.dat")))
        return self._predictor

    @property
    def detector(self) -> Any:
        if self._detector is None:
            name = self.config.detector
            if name == "yunet":
                self._detector = YuNetDetector(
                    self.config.score_threshold,
                    scales=(1.0,) + ((2.0 ** self.config.upsample,) if self.config.upsample else ()),
                    upscale_below=self.config.upscale_below,
                    upscale_every=self.config.upscale_every)
            elif name == "hog":
                import dlib  # not on the GPU image (scripts/gpu/importguard.py)
                self._detector = dlib.get_frontal_face_detector()
            elif name == "cnn":
                import dlib  # not on the GPU image (scripts/gpu/importguard.py)
                self._detector = dlib.cnn_face_detection_model_v1(
                    str(paths.dlib_model("mmod_human_face_detector.dat")))
            else:
                try:
                    from facenet_pytorch import MTCNN  # optional dependency
                except ImportError as exc:
                    raise DeidError("detector 'mtcnn' needs facenet-pytorch: "
                                    "pip install facenet-pytorch==2.5.3") from exc
                self._detector = MTCNN(keep_all=True, device="cpu", post_process=False)
        return self._detector

    def _rgb(self, frame: Any, name: str = "frame") -> np.ndarray:
        return to_rgb_uint8(frame, self.config.order, name=name)

    # -- steps a + b ----------------------------------------------------------------------
    def detect_boxes(self, frame: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Step a: raw detector boxes ``(x0, y0, x1, y1)`` in frame pixels and scores.

        With ``detect_scale < 1`` the detector runs on a downscaled frame (INTER_AREA) and
        boxes are scaled back (the fast path). Sorted by box area, largest first.
        """
        return self._detect_boxes_rgb(self._rgb(frame))

    def _detect_boxes_rgb(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        return [(b, sc) for b, sc, _ in self._detections_rgb(rgb)]

    def _detections_rgb(self, rgb: np.ndarray
                        ) -> list[tuple[np.ndarray, float, np.ndarray | None]]:
        """Raw detections ``(box, score, points5 or None)`` in frame pixels, largest first."""
        s = self.config.detect_scale
        small = rgb if s >= 1.0 else cv2.resize(rgb, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        if min(small.shape[:2]) < 8:
            return []
        out: list[tuple[np.ndarray, float, np.ndarray | None]] = []
        name = self.config.detector
        if name == "yunet":
            out = [(b, sc, p) for b, sc, p in self.detector.detect(small)]
        elif name == "hog":
            gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
            rects, scores, _ = self.detector.run(gray, self.config.upsample, 0.0)
            for r, sc in zip(rects, scores):
                out.append((np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1],
                                     np.float64), float(sc), None))
        elif name == "cnn":
            for d in self.detector(small, self.config.upsample):
                r = d.rect
                out.append((np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1],
                                     np.float64), float(d.confidence), None))
        else:
            import torch  # MTCNN only (optional): keeps deid_core.face free of torch
            with torch.no_grad():
                boxes, probs = self.detector.detect(small)
            if boxes is not None:
                for b, p in zip(boxes, probs):
                    out.append((np.asarray(b, np.float64), float(p), None))
        out = [(b / s, sc, None if p is None else p / s) for b, sc, p in out
               if sc >= self.config.score_threshold]
        out.sort(key=lambda t: -(t[0][2] - t[0][0]) * (t[0][3] - t[0][1]))
        return out

    def landmarks(self, frame: np.ndarray, box: Sequence[float]) -> np.ndarray:
        """Step b: 68 dlib landmarks (float32 68×2, frame pixels) inside a detector box."""
        return self._landmarks_rgb(self._rgb(frame), box)

    def _landmarks_rgb(self, rgb: np.ndarray, box: Sequence[float]) -> np.ndarray:
        import dlib  # not on the GPU image (scripts/gpu/importguard.py)
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        shape = self.predictor(rgb, dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

    def detect(self, frame: np.ndarray) -> list[Face]:
        """Steps a+b: every face in the frame (largest first) with a square box and 68 points."""
        return self._detect_rgb(self._rgb(frame))

    def _detect_rgb(self, rgb: np.ndarray) -> list[Face]:
        faces = []
        for box, score, pts in self._detections_rgb(rgb):
            fit_box = yunet_to_dlib_box(box) if self.config.detector == "yunet" else box
            lm = self._landmarks_rgb(rgb, fit_box)
            face = Face(box=square_box(*fit_box), landmarks=lm, score=score, points5=pts)
            if self.config.check_landmarks:
                ok, why, m = landmark_check(lm, box, pts, self.config)
                if not ok and m["shape_error"] > self.config.max_shape_error \
                        and score < self._fp_score():
                    continue              # implausible shape and a weak detection: not a face
                face.reliable, face.reason = ok, why
            faces.append(face)
        return faces

    def _fp_score(self) -> float:
        """Score below which a detection with an implausible landmark shape is dropped."""
        return self.config.fp_score if self.config.detector in ("yunet", "mtcnn") else 0.5

    # -- steps c, d -----------------------------------------------------------------------
    def transform(self, landmarks: np.ndarray) -> np.ndarray:
        """Step c: 2×3 float64 similarity frame→crop (Umeyama, all 68 points → template)."""
        lm = np.asarray(landmarks, dtype=np.float64)
        if lm.shape != (68, 2):
            raise DeidError(f"expected 68×2 landmarks, got shape {lm.shape}")
        return umeyama(lm, self.template)

    def warp(self, frame: np.ndarray, M: np.ndarray) -> np.ndarray:
        """Step d: the aligned ``size``×``size``×3 uint8 RGB crop (bilinear, reflected border)."""
        return self._warp_rgb(self._rgb(frame), M)

    def _warp_rgb(self, rgb: np.ndarray, M: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(rgb, np.asarray(M, np.float64), (self.size, self.size),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)

    # -- steps f, g, h --------------------------------------------------------------------
    def hull_weight(self, landmarks: np.ndarray, shape: tuple[int, int]
                    ) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
        """Step h's merge weight on the hull's bounding rectangle ``(x, y, w, h)``.

        1 deep inside the convex hull of the 68 points, ramping linearly to 0 over
        ``feather × face size`` pixels (distance transform *inside* the hull); exactly 0 on
        the rasterised hull boundary and outside. ``None`` when the hull is off-frame.
        """
        H, W = shape[:2]
        pts = np.round(np.asarray(landmarks, np.float64)).astype(np.int32)
        hull = cv2.convexHull(pts)
        x, y, w, h = cv2.boundingRect(hull)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
        if x1 - x0 < 3 or y1 - y0 < 3:
            return None
        # Rasterise the whole hull (its box may overhang the frame), then cut to the frame.
        full = np.zeros((h + 2, w + 2), np.uint8)
        cv2.fillConvexPoly(full, hull - np.array([x - 1, y - 1], np.int32), 1)
        dist = cv2.distanceTransform(full, cv2.DIST_L2, 3)
        feather = max(1.0, self.config.feather * max(w, h))
        weight = np.clip((dist - 1.0) / feather, 0.0, 1.0).astype(np.float32)
        weight = weight[1 + y0 - y:1 + y1 - y, 1 + x0 - x:1 + x1 - x]
        return (x0, y0, x1 - x0, y1 - y0), weight

    def paste(self, frame: np.ndarray, face: Face, M: np.ndarray, image: np.ndarray,
              mask: np.ndarray, inplace: bool = False, fields: np.ndarray | None = None
              ) -> np.ndarray:
        """Steps f+g+h for one face: unwarp ``image``/``mask`` with ``M⁻¹``, blend
        ``m·generated + (1 − m)·input``, and merge inside the feathered landmark hull.

        ``image`` is RGB uint8 S×S×3, ``mask`` S×S (or S×S×1) in [0, 1]. Only the hull's
        bounding rectangle is computed. Returns a new frame (in ``config.order``) unless
        ``inplace``: then ``frame`` must be a writable uint8 H×W×3 array and is modified.
        ``fields`` (a warp head's S×S×3): the generated face is the frame itself resampled
        at full resolution (:func:`warp_frame`); ``image`` is then not used.
        """
        if inplace:
            if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3
                    and frame.shape[2] == 3 and frame.flags.writeable):
                raise DeidError("paste(inplace=True) needs a writable uint8 H×W×3 frame, got "
                                f"{getattr(frame, 'shape', type(frame))}")
            out = frame
        else:
            out = to_rgb_uint8(frame, name="frame").copy()   # keeps config.order's channels
        if self.config.order == "bgr":
            image = np.asarray(image)[..., ::-1]              # blend in the frame's order
        return self._paste_inplace(out, face, M, image, mask, fields)

    def _paste_inplace(self, out: np.ndarray, face: Face, M: np.ndarray, image: np.ndarray,
                       mask: np.ndarray, fields: np.ndarray | None = None,
                       source: np.ndarray | None = None) -> np.ndarray:
        """``source``: the frame a warp head's fields resample (default ``out``, read before
        this face is written; :meth:`process` passes the untouched input, which earlier faces
        of the frame have not changed)."""
        S = self.size
        image = np.asarray(image)
        mask = np.asarray(mask, dtype=np.float32)
        if mask.ndim == 3 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        if image.shape != (S, S, 3) or image.dtype != np.uint8:
            raise DeidError(f"paste: generated image must be uint8 {S}×{S}×3, got "
                            f"{image.shape} {image.dtype}")
        if mask.shape != (S, S):
            raise DeidError(f"paste: mask must be {S}×{S} in [0, 1], got {mask.shape}")
        hw = self.hull_weight(face.landmarks, out.shape)
        if hw is None:
            return out
        (x, y, w, h), weight = hw
        inv = cv2.invertAffineTransform(np.asarray(M, np.float64))
        inv[:, 2] -= (x, y)                        # map the crop onto the ROI only
        if fields is None:
            gen = cv2.warpAffine(np.ascontiguousarray(image), inv, (w, h), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        else:
            gen = warp_frame(out if source is None else source, M, fields, (x, y, w, h))
        m = cv2.warpAffine(np.clip(mask, 0.0, 1.0), inv, (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        alpha = (weight * m)[..., None]            # (g) mask blend × (h) hull merge
        roi = out[y:y + h, x:x + w]
        base = roi.astype(np.float32)
        roi[...] = np.clip(np.rint(base + alpha * (gen - base)), 0, 255).astype(np.uint8)
        return out

    def obscure_face(self, out: np.ndarray, face: Face) -> None:
        """The fallback for a face the network cannot take (step b'): pixelate its box grown
        by ``obscure_grow`` and the hull of its landmarks, in place."""
        lm = np.asarray(face.landmarks, np.float64)
        box = grow_box(face.box, self.config.obscure_grow)
        box = np.r_[np.minimum(box[:2], lm.min(0)), np.maximum(box[2:], lm.max(0))]
        obscure(out, box, self.config.obscure_blocks)

    def process(self, frame: np.ndarray, net: CropFn, faces: list[Face] | None = None,
                check: bool = True) -> tuple[np.ndarray, dict]:
        """The whole test-time pipeline (§3 a–h) on one frame.

        ``net`` is called once with all aligned crops (N×S×S×3 uint8) and returns
        ``(images uint8 N×S×S×3, masks float32 N×S×S in [0, 1])``. ``faces`` may be given
        (e.g. tracked/smoothed); otherwise they are detected. Faces marked unreliable (step
        b') are obscured (:meth:`obscure_face`) instead of generated, and so is every generated
        face that :attr:`check` finds still recognisable (``check=False``: not checked in this
        frame). With no face the frame comes back unchanged (a copy) and
        ``info["n_faces"] == 0``. ``info`` holds ``faces``, ``n_faces``, ``n_obscured``
        (unreliable), ``recognisable`` (indices into ``faces`` of generated faces the check
        obscured), ``transforms`` (the 2×3 ``M`` per generated face) and stage ``times`` (s).
        """
        t0 = time.perf_counter()
        rgb = self._rgb(frame)
        if faces is None:
            faces = self._detect_rgb(rgb)
        t1 = time.perf_counter()
        gen = [f for f in faces if f.reliable]
        weak = [f for f in faces if not f.reliable]
        info: dict[str, Any] = {"faces": faces, "n_faces": len(faces), "n_obscured": len(weak),
                                "recognisable": [], "transforms": []}
        out = rgb.copy()
        times = {"detect": t1 - t0, "warp": 0.0, "net": 0.0, "paste": 0.0, "check": 0.0}
        if gen:
            Ms = [self.transform(f.landmarks) for f in gen]
            crops = np.stack([self._warp_rgb(rgb, M) for M in Ms])
            t2 = time.perf_counter()
            images, masks, fields = _check_net_output(net(crops), len(gen), self.size)
            t3 = time.perf_counter()
            for i, (face, M) in enumerate(zip(gen, Ms)):
                self._paste_inplace(out, face, M, images[i], masks[i],
                                    None if fields is None else fields[i], rgb)
            info["transforms"] = Ms
            times.update(warp=t2 - t1, net=t3 - t2, paste=time.perf_counter() - t3)
            if check and self.check is not None:
                t5 = time.perf_counter()
                for i, face in enumerate(faces):
                    if face.reliable and self.check(rgb, out, face):
                        self.obscure_face(out, face)
                        info["recognisable"].append(i)
                times["check"] = time.perf_counter() - t5
        t4 = time.perf_counter()
        for face in weak:
            self.obscure_face(out, face)
        times["obscure"] = time.perf_counter() - t4
        info["times"] = times
        if self.config.order == "bgr":
            out = out[:, :, ::-1].copy()
        return out, info


def warp_frame(frame: np.ndarray, M: np.ndarray, fields: np.ndarray,
               roi: tuple[int, int, int, int]) -> np.ndarray:
    """A warp head's face at the frame's own resolution, on ``roi`` = (x, y, w, h): float32
    h×w×3. The crop's output is source_crop(p + f(p)) with p = M·q, so the frame pixel q takes
    frame(q + A⁻¹·f(M·q)), A the linear part of ``M``; the luma change (``fields[..., 2]``,
    grey levels) is added to every channel. Outside the crop the fields are 0."""
    x, y, w, h = roi
    inv = cv2.invertAffineTransform(np.asarray(M, np.float64))
    inv_roi = inv.copy()
    inv_roi[:, 2] -= (x, y)
    f = cv2.warpAffine(np.ascontiguousarray(fields, np.float32), inv_roi, (w, h),
                       flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    d = f[..., :2] @ inv[:, :2].T.astype(np.float32)        # crop pixels → frame pixels
    gx, gy = np.meshgrid(np.arange(x, x + w, dtype=np.float32),
                         np.arange(y, y + h, dtype=np.float32))
    gen = cv2.remap(frame, gx + d[..., 0], gy + d[..., 1], cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REFLECT_101).astype(np.float32)
    return gen + f[..., 2:3]


def _check_net_output(result: Any, n: int, size: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    try:
        images, masks, *rest = result
    except (TypeError, ValueError) as exc:
        raise DeidError("net must return a pair (images, masks) or (images, masks, fields)") from exc
    if len(rest) > 1:
        raise DeidError("net must return a pair (images, masks) or (images, masks, fields)")
    fields = None
    if rest:
        fields = np.asarray(rest[0], dtype=np.float32)
        if fields.shape != (n, size, size, 3) or not np.isfinite(fields).all():
            raise DeidError(f"net fields must be finite float {n}×{size}×{size}×3, got "
                            f"{fields.shape}")
    images = np.asarray(images)
    masks = np.asarray(masks, dtype=np.float32)
    if masks.ndim == 4 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    if images.shape != (n, size, size, 3) or images.dtype != np.uint8:
        raise DeidError(f"net images must be uint8 {n}×{size}×{size}×3, got {images.shape} "
                        f"{images.dtype}")
    if masks.shape != (n, size, size):
        raise DeidError(f"net masks must be float {n}×{size}×{size} in [0, 1], got {masks.shape}")
    if not np.isfinite(masks).all() or masks.min() < -1e-4 or masks.max() > 1 + 1e-4:
        raise DeidError(f"net masks must lie in [0, 1], got range "
                        f"[{np.nanmin(masks):.3g}, {np.nanmax(masks):.3g}]")
    return images, masks, fields


def passthrough_crops(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stand-in network (step e): returns the aligned crops unchanged and mask = 1."""
    crops = np.asarray(crops)
    return crops.copy(), np.ones(crops.shape[:3], np.float32)


def align_face(frame: np.ndarray, aligner: FaceAligner, face: Face) -> dict:
    """Crop and metadata for one face: ``{"crop", "M", "landmarks_crop", ...}``."""
    M = aligner.transform(face.landmarks)
    return {"crop": aligner.warp(frame, M), "M": M,
            "landmarks_crop": apply_affine(M, face.landmarks), "face": face}


# ----------------------------------------------------------------------------------------
# One image: `deid align IN OUT`.
def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def align_file(src: str | os.PathLike, dst: str | os.PathLike,
               json_path: str | os.PathLike | None = None, config: AlignConfig | None = None,
               face_index: int = 0) -> dict:
    """Align one image file: write the crop of face ``face_index`` (largest first) to ``dst``
    and a landmarks JSON (default ``dst`` with suffix ``.json``) describing every face:
    ``box``, ``score``, ``landmarks`` (frame), ``landmarks_crop``, ``M`` (frame→crop).

    Never overwrites the input; writes are atomic. Raises :class:`DeidError` when no face
    is found or ``face_index`` is out of range. Returns the JSON document.
    """
    src, dst = Path(src), Path(dst)
    json_path = Path(json_path) if json_path else dst.with_suffix(".json")
    if dst.suffix.lower() not in IMAGE_SUFFIXES:
        raise DeidError(f"output {dst}: unsupported image suffix {dst.suffix!r} (use .png or .jpg)")
    for out in (dst, json_path):
        if _same_file(src, out):
            raise DeidError(f"refusing to overwrite the input {src} with output {out}")
    if _same_file(dst, json_path):
        raise DeidError(f"crop and JSON outputs are the same file: {dst}")
    aligner = FaceAligner(config, order="rgb")             # read_image gives RGB
    frame = read_image(src)
    faces = aligner.detect(frame)
    if not faces:
        raise DeidError(f"no face found in {src} (detector {aligner.config.detector!r}; try "
                        f"--upsample 1 or --detector cnn)")
    if not 0 <= face_index < len(faces):
        raise DeidError(f"--face {face_index} out of range: {len(faces)} face(s) in {src}")
    records = []
    for face in faces:
        a = align_face(frame, aligner, face)
        rec = face.to_json()
        rec["landmarks_crop"] = np.round(a["landmarks_crop"].astype(np.float64), 2).tolist()
        rec["M"] = np.round(a["M"], 6).tolist()
        records.append(rec)
        if len(records) == face_index + 1:
            crop = a["crop"]
    doc = {"input": str(src), "crop": str(dst), "image_size": list(frame.shape[:2][::-1]),
           "size": aligner.size, "margin": aligner.config.margin,
           "detector": aligner.config.detector, "n_faces": len(faces), "face": face_index,
           "faces": records}
    write_image(dst, crop)
    paths.write_text_atomic(json_path, json.dumps(doc, indent=1) + "\n")
    return doc
