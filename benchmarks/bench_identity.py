"""Embeddings per second of each identity network on CPU at batch 1 and 32.

Baselines measured in the same process: dlib's own C++ ``compute_face_descriptor`` (for the dlib
port), ``cv2.dnn`` on the same frozen graph (facenet-casia, batch 1 only: the graph fixes it) and
``cv2.FaceRecognizerSF`` (sface). Prints embeddings/s and ours/baseline ratios.

Usage: python benchmarks/bench_identity.py [--threads 2] [--seconds 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deid_core import paths  # noqa: E402


def rate(fn, n_per_call: int, seconds: float) -> float:
    fn()  # warm-up
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or calls < 2:
        fn()
        calls += 1
    return calls * n_per_call / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    # imported after OMP_NUM_THREADS is set: OpenMP and BLAS read it when they load
    import cv2  # after OMP_NUM_THREADS
    import dlib  # after OMP_NUM_THREADS
    import numpy as np  # after OMP_NUM_THREADS
    import torch  # after OMP_NUM_THREADS
    from deid_core.face import read_image  # after OMP_NUM_THREADS
    from deid_core.identity import load_identity_network  # after OMP_NUM_THREADS
    from deid_core.identity.facenet import cv2_reference_net  # after OMP_NUM_THREADS
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    img = read_image(sorted((paths.sample_dir() / "portraits").glob("*.jpg"))[0])
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(paths.dlib_model("shape_predictor_68_face_landmarks.dat")))
    shape = sp(img, det(img, 1)[0])
    lm = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
    rows = []

    net = load_identity_network("dlib")
    chip = net.chip(img, lm)
    rec = dlib.face_recognition_model_v1(str(paths.dlib_model("dlib_face_recognition_resnet_model_v1.dat")))
    base1 = rate(lambda: rec.compute_face_descriptor(chip), 1, args.seconds)
    chips32 = [chip] * 32
    base32 = rate(lambda: rec.compute_face_descriptor(chips32), 32, args.seconds)
    for b, base in ((1, base1), (32, base32)):
        batch = np.stack([chip] * b)
        rows.append(("dlib (torch port)", b, rate(lambda: net.embed(batch), b, args.seconds), "dlib C++", base))

    fn = load_identity_network("facenet-casia")
    chip = fn.chip(img, lm)
    ref = cv2_reference_net()
    x = fn._standardise(torch.from_numpy(chip).permute(2, 0, 1)[None].float()).numpy()

    def cv2_run():
        ref.setInput(x)
        ref.forward()
    base = rate(cv2_run, 1, args.seconds)
    for b in (1, 32):
        batch = np.stack([chip] * b)
        rows.append(("facenet-casia (torch)", b, rate(lambda: fn.embed(batch), b, args.seconds),
                     "cv2.dnn batch 1", base))

    sf = load_identity_network("sface", threads=args.threads)
    chip = sf.chip(img, lm)
    frs = cv2.FaceRecognizerSF.create(str(sf.path), "")
    bgr = np.ascontiguousarray(chip[..., ::-1])
    base = rate(lambda: frs.feature(bgr), 1, args.seconds)
    for b in (1, 32):
        batch = np.stack([chip] * b)
        rows.append(("sface (onnxruntime)", b, rate(lambda: sf.embed(batch), b, args.seconds),
                     "cv2.FaceRecognizerSF", base))

    print(f"threads={args.threads}  torch {torch.__version__}  cv2 {cv2.__version__}")
    print(f"{'network':24s} {'batch':>5s} {'emb/s':>8s}   {'baseline':22s} {'emb/s':>8s} {'ratio':>6s}")
    for name, b, r, bname, br in rows:
        print(f"{name:24s} {b:5d} {r:8.1f}   {bname:22s} {br:8.1f} {r / br:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
