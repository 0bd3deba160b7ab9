"""User-study kit for Table 2: study material, the responses schema, scoring and figures.

(a) Video study (Table 2a): observers see single clips in random order and answer whether each is
    ``real`` or ``modified``; success rate per observer, then mean ± SD over observers
    (paper: 53.6 %, SD 13.0 %, n = 20, 8 videos; 50 % is chance, closer to 50 % is better).
(b) Still-image identification (Table 2b-d): a gallery row of K persons, then input images and
    their de-identified versions shown one at a time in random order; observers pick the gallery
    person. Confusion matrices for the originals (2c, the control) and the de-ID images (2d).

Files (CSV, one row per item; the answer key is written to its own folder, never next to the
sheets observers see):

- ``trials.csv``          (sheet)   ``task, trial_id, item``            — item = clip or image path
- ``answer_key/key.csv``  (key)     ``task, trial_id, truth, condition`` — truth: ``real``/``modified``
  for ``video``; the gallery person for ``identify``; condition: ``original``/``deid`` (or model name)
- ``responses.csv``       (answers) ``observer, task, trial_id, answer``

``automatic_observer`` fills ``responses.csv`` with an independent recognizer (identification: the
nearest gallery person by cosine similarity; video: face-region flicker above the clips' median →
``modified``) so the whole chain runs without people.
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Sequence

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from deid_core import paths
from deid_core.errors import DeidError
from deid_core.evaluate.conditions import deid_transform
from deid_core.evaluate.faces import LandmarkDetector, read_image
from deid_core.evaluate.table_writer import write_table
from deid_core.evaluate.video_metrics import face_masks, flicker
from deid_core.face import AlignConfig, Face, FaceAligner, align_face, write_image
from deid_core.paths import results_dir
from deid_core.video import read_frames


TASKS = ("video", "identify")
RESPONSE_COLUMNS = ["observer", "task", "trial_id", "answer"]
KEY_COLUMNS = ["task", "trial_id", "truth", "condition"]
PAPER_VIDEO = "53.6 % (SD 13.0 %), n = 20 observers, 8 videos"


def write_csv(df: pd.DataFrame, path: Path, header_comment: str | None = None) -> Path:
    with paths.atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        if header_comment:
            fh.write(f"# {header_comment}\n")
        df.to_csv(fh, index=False)
    return path


def read_csv(path: str | os.PathLike, columns: Sequence[str]) -> pd.DataFrame:
    """Read a kit CSV (``#`` comment lines allowed) and check its columns."""
    path = Path(path)
    if not path.is_file():
        raise DeidError(f"CSV not found: {path}")
    df = pd.read_csv(path, comment="#", dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DeidError(f"{path}: missing column(s) {missing}; expected {list(columns)}")
    return df


# ----------------------------------------------------------------------------- material
def make_video_trials(real: Sequence[str | os.PathLike], modified: Sequence[str | os.PathLike],
                      out_dir: str | os.PathLike, seed: int = 0,
                      condition: str = "deid") -> tuple[Path, Path]:
    """Table 2a material: all clips in a random order as ``trials.csv`` + ``trials.html``;
    the answer key goes to ``out_dir/answer_key/key.csv``."""
    out = Path(out_dir)
    items = [(str(p), "real") for p in real] + [(str(p), "modified") for p in modified]
    if not items:
        raise DeidError("no clips given for the video study")
    for p, _ in items:
        if not Path(p).is_file():
            raise DeidError(f"clip not found: {p}")
    order = np.random.default_rng(seed).permutation(len(items))
    trials = pd.DataFrame({"task": "video", "trial_id": [f"v{k + 1:03d}" for k in range(len(items))],
                           "item": [items[i][0] for i in order]})
    key = pd.DataFrame({"task": "video", "trial_id": trials["trial_id"],
                        "truth": [items[i][1] for i in order],
                        "condition": [condition if items[i][1] == "modified" else "original" for i in order]})
    sheet = write_csv(trials, out / "trials.csv")
    keyp = write_csv(key, out / "answer_key" / "key.csv",
                      "ANSWER KEY - do not show to observers")
    rows = "\n".join(f"<tr><td>{t}</td><td><video src='{html.escape(i)}' controls width=480></video></td>"
                     f"<td>real ☐ &nbsp; modified ☐</td></tr>" for t, i in zip(trials.trial_id, trials.item))
    (out / "trials.html").write_text(
        "<html><body><h2>Real or modified?</h2><p>Each clip is either an original video or one whose "
        "face was modified. Mark one box per clip.</p><table border=1>"
        f"{rows}</table></body></html>", encoding="utf-8")
    return sheet, keyp


def _tile(images: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    out = []
    for im in images:
        h, w = im.shape[:2]
        s = size / max(h, w)
        r = cv2.resize(im, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        canvas = np.full((size, size, 3), 255, np.uint8)
        y, x = (size - r.shape[0]) // 2, (size - r.shape[1]) // 2
        canvas[y:y + r.shape[0], x:x + r.shape[1]] = r
        out.append(canvas)
    return out


def make_identification_sheet(gallery: dict[str, np.ndarray], inputs: dict[str, np.ndarray],
                              deid: dict[str, np.ndarray], out_dir: str | os.PathLike,
                              seed: int = 0, size: int = 160) -> dict[str, Path]:
    """Table 2b material: ``table2b_sheet.png`` (gallery / input / de-ID rows, for the report),
    the observer sheet ``identify.html`` (gallery labelled A, B, ...; probes in random order) with
    probe images under ``probes/``, ``trials.csv``, and ``answer_key/key.csv`` kept apart."""
    names = list(gallery)
    if not names or set(inputs) - set(names) or set(deid) - set(names):
        raise DeidError("inputs/deid must be keyed by gallery person names "
                        f"(gallery: {names}, inputs: {list(inputs)}, deid: {list(deid)})")
    out = Path(out_dir)
    (out / "probes").mkdir(parents=True, exist_ok=True)
    letters = {n: chr(ord("A") + i) for i, n in enumerate(names)}
    # report figure (Table 2b layout)
    rows = [("gallery", gallery), ("input", inputs), ("de-ID", deid)]
    fig, axes = plt.subplots(3, len(names), figsize=(2 * len(names), 6.4), squeeze=False)
    for r, (label, d) in enumerate(rows):
        for c, n in enumerate(names):
            ax = axes[r][c]
            ax.axis("off")
            if n in d:
                ax.imshow(_tile([d[n]], size)[0])
            if r == 0:
                ax.set_title(f"{letters[n]}: {n}", fontsize=8)
        axes[r][0].text(-0.1, 0.5, label, transform=axes[r][0].transAxes, rotation=90,
                        va="center", ha="right")
    fig.tight_layout()
    png = out / "table2b_sheet.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    # observer sheet: probes in random order, no names
    probes = [(n, "original", im) for n, im in inputs.items()] + [(n, "deid", im) for n, im in deid.items()]
    order = np.random.default_rng(seed).permutation(len(probes))
    trial_rows, key_rows = [], []
    for k, i in enumerate(order):
        n, cond, im = probes[i]
        tid = f"i{k + 1:03d}"
        f = out / "probes" / f"{tid}.jpg"
        write_image(f, _tile([im], size)[0])
        trial_rows.append({"task": "identify", "trial_id": tid, "item": f"probes/{tid}.jpg"})
        key_rows.append({"task": "identify", "trial_id": tid, "truth": letters[n], "condition": cond})
    gdir = out / "gallery"
    gdir.mkdir(exist_ok=True)
    for n in names:
        write_image(gdir / f"{letters[n]}.jpg", _tile([gallery[n]], size)[0])
    trials = pd.DataFrame(trial_rows)
    sheet = write_csv(trials, out / "trials.csv")
    keyp = write_csv(pd.DataFrame(key_rows), out / "answer_key" / "key.csv", "ANSWER KEY - do not show to observers")
    write_csv(pd.DataFrame({"letter": [letters[n] for n in names], "person": names}),
               out / "answer_key" / "gallery_names.csv")
    gal_html = "".join(f"<td><img src='gallery/{letters[n]}.jpg'><br>{letters[n]}</td>" for n in names)
    probe_html = "\n".join(f"<tr><td>{t}</td><td><img src='{html.escape(i)}'></td><td>"
                           + " ".join(f"{letters[n]} ☐" for n in names) + "</td></tr>"
                           for t, i in zip(trials.trial_id, trials.item))
    (out / "identify.html").write_text(
        f"<html><body><h2>Who is this?</h2><table border=1><tr>{gal_html}</tr></table>"
        f"<p>For each face below, tick the gallery person it shows.</p><table border=1>{probe_html}"
        "</table></body></html>", encoding="utf-8")
    return {"png": png, "trials": sheet, "key": keyp, "html": out / "identify.html"}


def identification_sheet(gallery: dict[str, np.ndarray], inputs: dict[str, np.ndarray],
                         checkpoint: str | os.PathLike, out_dir: str | os.PathLike, seed: int = 0,
                         lam: float | None = None, device: str = "cpu", crop_size: int = 256
                         ) -> dict[str, Path]:
    """Table 2b from whole images (``deid eval user-study sheet``, notebook 04): each input is
    de-identified (its own target, §3), then gallery, input and de-ID faces are cut as loose
    ``crop_size`` face crops and laid out by :func:`make_identification_sheet`."""
    show = FaceAligner(AlignConfig(size=crop_size))
    deid = deid_transform(checkpoint, lam=lam, device=device)

    def face_of(name: str, image: np.ndarray) -> Face:
        faces = show.detect(image)
        if not faces:
            raise DeidError(f"user-study sheet: no face found in the image of {name}")
        return faces[0]

    crops = {n: align_face(im, show, face_of(n, im))["crop"] for n, im in gallery.items()}
    probes, deids = {}, {}
    for n, im in inputs.items():
        face = face_of(n, im)
        probes[n] = align_face(im, show, face)["crop"]
        deids[n] = align_face(deid(im, face.landmarks), show, face)["crop"]
    return make_identification_sheet(crops, probes, deids, out_dir, seed)


# ----------------------------------------------------------------------------- scoring
def join_responses(responses: pd.DataFrame, key: pd.DataFrame) -> pd.DataFrame:
    """Responses joined with the key; unknown trial ids and unanswered key rows are errors/kept out."""
    r = responses.copy()
    r["answer"] = r["answer"].str.strip()
    df = r.merge(key, on=["task", "trial_id"], how="left", validate="many_to_one")
    unknown = df[df["truth"].isna()]
    if len(unknown):
        raise DeidError(f"{len(unknown)} responses refer to trials missing from the answer key, "
                        f"e.g. {unknown[['task', 'trial_id']].head(3).values.tolist()}")
    df["correct"] = df["answer"].str.lower() == df["truth"].str.lower()
    return df


def video_success(df: pd.DataFrame) -> dict:
    """Table 2a: success rate per observer (real vs modified), mean ± SD over observers (in %)."""
    v = df[df["task"] == "video"]
    if v.empty:
        raise DeidError("no video-task responses")
    bad = sorted(set(v["answer"].str.lower()) - {"real", "modified"})
    if bad:
        raise DeidError(f"video answers must be 'real' or 'modified', got {bad}")
    per = v.groupby("observer")["correct"].mean() * 100
    return {"observers": int(len(per)), "trials": int(len(v)), "mean": float(per.mean()),
            "sd": float(per.std(ddof=1)) if len(per) > 1 else 0.0, "per_observer": per.to_dict()}


def confusion(df: pd.DataFrame, condition: str, labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 2c/2d: rows = true person, columns = chosen person, row-normalised fractions."""
    d = df[(df["task"] == "identify") & (df["condition"] == condition)]
    if d.empty:
        raise DeidError(f"no identification responses for condition {condition!r}")
    labels = list(labels or sorted(set(d["truth"]) | set(d["answer"])))
    m = pd.crosstab(d["truth"], d["answer"]).reindex(index=labels, columns=labels, fill_value=0)
    return m.div(m.sum(axis=1).replace(0, 1), axis=0)


def plot_confusion(m: pd.DataFrame, title: str, path: str | os.PathLike) -> Path:
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    im = ax.imshow(m.values, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(m.columns)), m.columns)
    ax.set_yticks(range(len(m.index)), m.index)
    ax.set_xlabel("chosen")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m.values[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if m.values[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    with paths.atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def score_study(responses_csv: str | os.PathLike, key_csv: str | os.PathLike,
                name: str = "table2", label: str = "") -> dict:
    """Table 2a as ``results/tables/NAME_video.csv|md`` and 2c/2d as ``results/figures/NAME_confusion_*.png``."""
    df = join_responses(read_csv(responses_csv, RESPONSE_COLUMNS), read_csv(key_csv, KEY_COLUMNS))
    out: dict = {}
    note = [f"Responses: {responses_csv}{' (' + label + ')' if label else ''}."]
    if (df["task"] == "video").any():
        s = video_success(df)
        out["video"] = s
        write_table(f"{name}_video", pd.DataFrame([{
            "observers": s["observers"], "answers": s["trials"],
            "success rate %": f"{s['mean']:.1f} ± {s['sd']:.1f}", "paper": PAPER_VIDEO}]),
            "Table 2a — real vs modified video, success rate (mean ± SD over observers; 50 % = chance)", note)
    if (df["task"] == "identify").any():
        labels = sorted(set(df.loc[df.task == "identify", "truth"]))
        for cond, tag in (("original", "c"), ("deid", "d")):
            if ((df.task == "identify") & (df.condition == cond)).any():
                m = confusion(df, cond, labels)
                out[f"confusion_{cond}"] = m
                out[f"accuracy_{cond}"] = float(df[(df.task == "identify") & (df.condition == cond)]["correct"].mean())
                plot_confusion(m, f"Table 2{tag}: {cond}{' — ' + label if label else ''}",
                               results_dir() / "figures" / f"{name}_confusion_{cond}.png")
    return out


# ----------------------------------------------------------------------------- automatic observer
def automatic_observer(trials_csv: str | os.PathLike, base_dir: str | os.PathLike | None = None,
                       net=None, gallery_dir: str | os.PathLike | None = None,
                       observer: str = "auto", max_frames: int = 60) -> pd.DataFrame:
    """Answer a study's ``trials.csv`` with machines instead of people (same responses schema).

    identify: the evaluator ``net`` embeds each probe and the gallery images (``gallery_dir/<letter>.jpg``,
    as written by :func:`make_identification_sheet`) and answers the most similar letter.
    video: face-region temporal flicker (``deid_core.video.flicker``) of each clip; clips above
    the median are answered ``modified``.
    """
    trials = read_csv(trials_csv, ["task", "trial_id", "item"])
    base = Path(base_dir) if base_dir else Path(trials_csv).parent
    rows = []
    ident = trials[trials.task == "identify"]
    if len(ident):
        if net is None:
            raise DeidError("the automatic observer needs an evaluator for the identification task")
        det = LandmarkDetector()
        gdir = Path(gallery_dir) if gallery_dir else base / "gallery"
        gal = sorted(gdir.glob("*.jpg"))
        if not gal:
            raise DeidError(f"no gallery images in {gdir}")

        def emb(path: Path) -> np.ndarray | None:
            im = read_image(path)
            lm = det(im)
            return None if lm is None else net.embed_faces(im, [lm])[0]
        g = [(p.stem, emb(p)) for p in gal]
        g = [(n, e) for n, e in g if e is not None]
        G = np.stack([e / np.linalg.norm(e) for _, e in g])
        for t in ident.itertuples():
            e = emb(base / t.item)
            ans = "none" if e is None else g[int(np.argmax(G @ (e / np.linalg.norm(e))))][0]
            rows.append({"observer": observer, "task": "identify", "trial_id": t.trial_id, "answer": ans})
    vid = trials[trials.task == "video"]
    if len(vid):
        al = FaceAligner(detect_scale=0.5)
        fl = {}
        for t in vid.itertuples():
            p = Path(t.item) if Path(t.item).is_absolute() else base / t.item
            frames = read_frames(p, max_frames)
            fl[t.trial_id] = flicker(frames, face_masks(frames, al))
        med = float(np.nanmedian(list(fl.values())))
        for tid, f in fl.items():
            rows.append({"observer": observer, "task": "video", "trial_id": tid,
                         "answer": "modified" if f > med else "real"})
    return pd.DataFrame(rows, columns=RESPONSE_COLUMNS)

