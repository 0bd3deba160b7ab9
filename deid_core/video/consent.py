"""Consent list for video file mode: keep some people visible, or de-identify only some people.

Users pass reference photos (files and/or folders of images; the person's name is the file
stem, photos sharing a stem are one person). The largest face of each photo is embedded with
SFace (OpenCV Zoo, cosine similarity; its own same-person threshold is 0.363). The video
pipeline calls :meth:`ConsentList.observe` with a track's frame and 68 landmarks on frames
where the track's face was detected with reliable landmarks, and :meth:`ConsentList.decision`
to ask what to do with the track.

Rules (privacy first: whatever is uncertain is de-identified):

- per observation, the cosine similarity to each reference person (the best of that person's
  photos); a track's similarities are kept per person, so its statistic is always measured
  against ONE person, never the best of a different person on each frame;
- a track with fewer than ``min_votes`` observations is de-identified, in both modes;
- ``keep`` mode: the statistic is the low ``keep_quantile`` (``"lower"`` quantile, an observed
  value) of the per-frame similarities to the best-scoring person; the track is kept only if
  it reaches ``keep_threshold`` (conservative), so one lucky frame cannot keep a stranger:
  about 80 % of a track's observed frames must be above the threshold;
- ``only`` mode: the statistic is the median per-frame similarity to the best-scoring person;
  the track is de-identified if it reaches ``only_threshold`` (liberal, below SFace's 0.363);
- work is bounded: every call is used until ``min_votes`` observations exist, then every
  ``observe_every``-th call, at most ``max_observations`` per track
  (:meth:`ConsentList.wants` tells the caller whether the next call would be used).

Thresholds, measured by ``scripts/consent_false_keep.py`` (``results/tables/consent_false_keep.md``)
on ``celeba-wild-256`` (5,643 in-the-wild colour images of 298 people with a detected face; per
person one reference photo, the most typical one (``medoid``; in brackets: the first image,
any quality), every other person's images as strangers; tracks of distinct random images,
3.2 M stranger tracks at 5 votes):

- ``keep_threshold = 0.45``: per-image false-keep (reference vs one stranger image) 0.015 %
  [0.010 %], vs 0.25 % at SFace's 0.363; per-track false-keep 0.004 % [0.002 %] at 5 votes
  (the floor at any threshold is label noise: some CelebA ids are the same person); true-keep
  per image 93 % [86 %], per track 74 % / 86 % / 91 % at 5 / 10 / 15 votes [63 / 74 / 78 %];
- ``only_threshold = 0.25``: 99.4 % / 99.7 % of the listed person's tracks (5 / 15 votes) are
  de-identified [95.7 %, poor references], at the cost of 3 % of stranger tracks de-identified
  too (harmless); 0.30 would miss 1.2 % of them.

Per-image numbers are the worst case for a video whose frames are near-identical (a stranger
who matches one frame matches them all); with R reference people the false-keep rate grows
about R-fold.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Protocol, Sequence

import numpy as np

from deid_core.errors import DeidError
from deid_core.face import IMAGE_SUFFIXES, FaceAligner, read_image

MODES = ("keep", "only")

#: the identity network the thresholds were measured with
CALIBRATED_NETWORK = "sface"


class IdentityEmbedder(Protocol):
    """What the consent list needs of an identity network (``deid_core.identity``'s SFace:
    ``load_identity_network("sface")``; passed in because the video layer does not import
    the identity layer)."""
    info: Any

    def chip(self, image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray: ...

    def embed(self, chips: np.ndarray) -> np.ndarray: ...


@dataclass
class ConsentConfig:
    """Settings of :class:`ConsentList` (see the module doc for the rules and measurements)."""
    mode: str = "keep"              # "keep": keep matched people, de-identify others; "only": the reverse
    keep_threshold: float = 0.45    # keep mode: track statistic (cosine similarity) needed to keep
    only_threshold: float = 0.25    # only mode: track statistic above which the track is de-identified
    min_votes: int = 5              # fewer observations: uncertain → de-identified (both modes)
    keep_quantile: float = 0.2      # keep mode statistic: this low quantile of the per-frame similarities
    observe_every: int = 5          # after min_votes observations, use every k-th observe() call
    max_observations: int = 15      # at most this many embeddings per track

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise DeidError(f"consent mode must be one of {MODES}, got {self.mode!r}")
        for name in ("keep_threshold", "only_threshold"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and -1.0 <= v <= 1.0):
                raise DeidError(f"consent {name} must be a cosine similarity in [-1, 1], got {v!r}")
        if self.keep_threshold < self.only_threshold:
            raise DeidError(f"consent keep_threshold ({self.keep_threshold}) must not be below "
                            f"only_threshold ({self.only_threshold}): keeping needs the stricter match")
        for name in ("min_votes", "observe_every", "max_observations"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise DeidError(f"consent {name} must be an integer >= 1, got {v!r}")
        if self.max_observations < self.min_votes:
            raise DeidError(f"consent max_observations ({self.max_observations}) must be >= "
                            f"min_votes ({self.min_votes})")
        if not (isinstance(self.keep_quantile, (int, float)) and 0.0 <= self.keep_quantile <= 0.5):
            raise DeidError(f"consent keep_quantile must be in [0, 0.5], got {self.keep_quantile!r}")


@dataclass
class TrackConsent:
    """What to do with one track: ``action`` is ``"keep"`` or ``"deidentify"``."""
    track_id: Hashable
    action: str
    person: str | None          # the matched reference person (None: no match)
    votes: int                  # observations used
    statistic: float            # the vote statistic against the best-scoring person (nan: none)

    def to_json(self) -> dict:
        stat = None if math.isnan(self.statistic) else round(float(self.statistic), 4)
        tid = self.track_id if isinstance(self.track_id, (int, str)) else str(self.track_id)
        return {"track": tid, "decision": self.action, "person": self.person,
                "votes": int(self.votes), "statistic": stat}


def vote_statistic(similarities: np.ndarray, mode: str, keep_quantile: float = 0.2,
                   axis: int = -1) -> np.ndarray:
    """The track statistic of per-frame similarities to one person along ``axis``: the low
    ``keep_quantile`` (``"lower"``: an observed value) in keep mode, the median in only mode."""
    s = np.asarray(similarities, np.float64)
    if mode == "keep":
        return np.quantile(s, keep_quantile, axis=axis, method="lower")
    if mode == "only":
        return np.median(s, axis=axis)
    raise DeidError(f"consent mode must be one of {MODES}, got {mode!r}")


def photo_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files of ``paths`` (files, or folders whose images are taken, sorted, not recursive)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DeidError(f"consent photo folder {p} has no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise DeidError(f"consent photo not found: {p}")
    if not files:
        raise DeidError("no consent photos given")
    return files


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.atleast_2d(np.asarray(x, np.float64))
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class _TrackVotes:
    calls: int = 0
    since_last: int = 0
    sims: list = field(default_factory=list)   # per observation: (P,) similarity per person


class ConsentList:
    """Reference people and per-track votes (:meth:`observe`, :meth:`decision`)."""

    def __init__(self, names: Sequence[str], embeddings: np.ndarray, network: IdentityEmbedder,
                 config: ConsentConfig | None = None) -> None:
        self.config = config or ConsentConfig()
        emb = np.asarray(embeddings, np.float64)
        if emb.ndim != 2 or len(emb) != len(names) or len(names) == 0:
            raise DeidError(f"consent references: need one embedding row per name, got "
                            f"{len(names)} names and shape {emb.shape}")
        check_network(network)
        self.network = network
        self.photo_names = [str(n) for n in names]
        self.people = sorted(set(self.photo_names))
        self._person_of = np.array([self.people.index(n) for n in self.photo_names])
        self._refs = _unit(emb)
        self._tracks: dict[Hashable, _TrackVotes] = {}

    @classmethod
    def from_photos(cls, paths: Sequence[str | os.PathLike], config: ConsentConfig | None = None, *,
                    network: IdentityEmbedder, aligner: FaceAligner | None = None) -> "ConsentList":
        """Embed the largest face of each photo in ``paths`` (files and/or folders); the
        person's name is the file stem. DeidError naming the file if it is missing,
        unreadable, or has no usable face."""
        check_network(network)
        aligner = aligner or FaceAligner()
        names, chips = [], []
        for f in photo_files(paths):
            image = read_image(f)            # DeidError naming the file if unreadable
            faces = aligner.detect(image)
            if not faces:
                raise DeidError(f"consent photo {f}: no face found (use a clear, frontal photo)")
            face = faces[0]
            if not face.reliable:
                raise DeidError(f"consent photo {f}: the largest face cannot be aligned reliably "
                                f"({face.reason}); use a clear, frontal photo")
            chips.append(network.chip(image, face.landmarks))
            names.append(f.stem)
        return cls(names, network.embed(np.stack(chips)), network, config)

    # -- votes ----------------------------------------------------------------------------
    def wants(self, track_id: Hashable) -> bool:
        """Whether the next :meth:`observe` call for this track would be used (bounded work)."""
        t = self._tracks.get(track_id)
        if t is None or len(t.sims) < self.config.min_votes:
            return t is None or len(t.sims) < self.config.max_observations
        return len(t.sims) < self.config.max_observations and t.since_last + 1 >= self.config.observe_every

    def similarities(self, frame_rgb: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        """(P,) cosine similarity of the face at ``landmarks68`` to each person (best photo)."""
        e = _unit(self.network.embed(self.network.chip(frame_rgb, landmarks68)[None]))
        per_photo = self._refs @ e[0]
        out = np.full(len(self.people), -1.0)
        np.maximum.at(out, self._person_of, per_photo)
        return out

    def observe(self, track_id: Hashable, frame_rgb: np.ndarray, landmarks68: np.ndarray) -> float:
        """Record one observation of a track's face; returns its best similarity to any person,
        or nan when the call is skipped (see :meth:`wants`)."""
        use = self.wants(track_id)
        t = self._tracks.setdefault(track_id, _TrackVotes())
        t.calls += 1
        if not use:
            t.since_last += 1
            return float("nan")
        sims = self.similarities(frame_rgb, landmarks68)
        t.sims.append(sims)
        t.since_last = 0
        return float(sims.max())

    def observe_similarities(self, track_id: Hashable, similarities: np.ndarray) -> None:
        """Record an observation given its (P,) per-person similarities (no image work)."""
        s = np.asarray(similarities, np.float64).reshape(-1)
        if s.shape != (len(self.people),):
            raise DeidError(f"consent: need {len(self.people)} similarities, got {s.shape}")
        t = self._tracks.setdefault(track_id, _TrackVotes())
        t.calls += 1
        t.sims.append(s)
        t.since_last = 0

    def decision(self, track_id: Hashable) -> TrackConsent:
        """Keep or de-identify this track (module doc rules; unknown or uncertain → de-identify)."""
        cfg = self.config
        t = self._tracks.get(track_id)
        votes = 0 if t is None else len(t.sims)
        if votes == 0:
            return TrackConsent(track_id, "deidentify", None, 0, float("nan"))
        stats = vote_statistic(np.stack(t.sims), cfg.mode, cfg.keep_quantile, axis=0)
        best = int(np.argmax(stats))
        stat, person = float(stats[best]), self.people[best]
        if votes < cfg.min_votes:
            return TrackConsent(track_id, "deidentify", None, votes, stat)
        if cfg.mode == "keep":
            kept = stat >= cfg.keep_threshold
            return TrackConsent(track_id, "keep" if kept else "deidentify",
                                person if kept else None, votes, stat)
        matched = stat >= cfg.only_threshold
        return TrackConsent(track_id, "deidentify" if matched else "keep",
                            person if matched else None, votes, stat)

    def track_ids(self) -> list[Hashable]:
        return list(self._tracks)

    def votes(self) -> dict:
        """Every track's collected votes (picklable), for a resumable scan."""
        return dict(self._tracks)

    def restore_votes(self, votes: dict) -> None:
        """Continue from :meth:`votes` saved by an interrupted scan."""
        self._tracks = dict(votes)

    def fingerprint(self) -> str:
        """Identifies the settings and the reference faces (a resumed scan must match them)."""
        h = hashlib.sha1(repr((self.config, self.photo_names)).encode())
        h.update(np.round(self._refs, 4).tobytes())
        return h.hexdigest()

    def to_json(self) -> dict:
        """Run-report summary: settings, reference people, and each track's decision (no embeddings)."""
        cfg = self.config
        return {"mode": cfg.mode, "network": CALIBRATED_NETWORK,
                "keep_threshold": cfg.keep_threshold, "only_threshold": cfg.only_threshold,
                "min_votes": cfg.min_votes, "keep_quantile": cfg.keep_quantile,
                "max_observations": cfg.max_observations, "people": list(self.people),
                "photos": len(self.photo_names),
                "tracks": [self.decision(tid).to_json() for tid in self._tracks]}


def check_network(network: Any) -> None:
    """The consent thresholds were measured with SFace (cosine): refuse other networks."""
    info = getattr(network, "info", None)
    if getattr(info, "name", None) != CALIBRATED_NETWORK or getattr(info, "metric", None) != "cosine":
        raise DeidError(f"consent list: needs the {CALIBRATED_NETWORK!r} identity network "
                        f"(thresholds are calibrated for it), got {getattr(info, 'name', network)!r}")
