"""``deid eval ...``: the paper's tables (§4). Argument parsing only; each runner imports its table
module lazily, so ``deid --help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from deid_core.errors import DeidError


EVALUATORS = ["facenet-casia", "sface", "arcface", "facenet-vggface2", "dlib"]


def _common(p: argparse.ArgumentParser, multi: bool = True, lam: bool = True) -> None:
    if multi:
        p.add_argument("--evaluator", action="append", choices=EVALUATORS,
                       help="independent recognizer (repeatable; default facenet-casia + sface). "
                            "'dlib' is the LOSS network: an extra, labelled row only")
    else:
        p.add_argument("--evaluator", default="sface", choices=EVALUATORS)
    p.add_argument("--weights", help="local weights file for arcface / facenet-vggface2 "
                                     "(or DEID_ARCFACE_WEIGHTS / DEID_FACENET_WEIGHTS)")
    p.add_argument("--checkpoint", help="de-ID checkpoint (.pt) for the de-ID rows")
    if lam:
        p.add_argument("--lam", type=float, help="λ for a λ-conditioned checkpoint (default: the "
                                                 "one it was saved with)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="table name under results/tables (default per command)")


def _kw(args, **extra) -> dict:
    kw = {k: v for k, v in extra.items() if v is not None}
    if getattr(args, "name", None):
        kw["name"] = args.name
    return kw


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="reproduce the paper's evaluation: lfw (Table 5), rank (Table 4), "
                                    "table3, lambda (Fig. 9), naturalness, gates, attributes, gallery, user-study (Table 2)")
    sub = p.add_subparsers(dest="eval_command", metavar="TABLE")

    q = sub.add_parser("lfw", help="Table 5: LFW verification TPR@FAR and 10-fold accuracy")
    q.add_argument("--lfw", help="LFW folder (any layout; default shared lfw-a)")
    q.add_argument("--pairs", help="pairs.txt (default: in/next to the LFW folder)")
    q.add_argument("--per-fold", type=int, help="subsample: matched and mismatched pairs per fold")
    q.add_argument("--far", type=float, default=1e-3)
    q.add_argument("--no-baselines", action="store_true")
    _common(q)

    def run_lfw(a):
        from deid_core.evaluate.conditions import DEFAULT_EVALUATORS  # keeps deid --help free of torch
        from deid_core.evaluate.lfw import run_lfw  # keeps deid --help free of torch
        df = run_lfw(a.evaluator or list(DEFAULT_EVALUATORS), a.lfw, a.pairs, a.per_fold, a.checkpoint,
                     not a.no_baselines, a.weights, a.far, a.seed, **_kw(a, lam=a.lam))
        print(df.to_string(index=False))
        return 0
    q.set_defaults(func=run_lfw)

    q = sub.add_parser("rank", help="Table 4: rank of the true identity in a large gallery")
    q.add_argument("--lfw", help="folder-per-person probe+gallery set (default shared lfw-a)")
    q.add_argument("--extra", action="append", help="extra gallery folder(s) (default shared celeba-aligned-10k)")
    q.add_argument("--probe-identities", type=int, help="subsample of probe identities")
    q.add_argument("--max-probes", type=int, default=10, help="probes per identity (at most half its images)")
    q.add_argument("--max-gallery-images", type=int, help="gallery images per identity (cap)")
    q.add_argument("--max-extra-identities", type=int, help="identities per extra gallery folder (cap)")
    q.add_argument("--no-baselines", action="store_true")
    _common(q, multi=False)

    def run_rank(a):
        from deid_core.evaluate.rank import run_rank  # keeps deid --help free of torch
        df = run_rank(a.evaluator, a.lfw, a.extra, a.checkpoint, not a.no_baselines, a.weights,
                      a.probe_identities, a.max_probes, a.max_gallery_images, a.max_extra_identities,
                      a.seed, **_kw(a, lam=a.lam))
        print(df.to_string(index=False))
        return 0
    q.set_defaults(func=run_rank)

    q = sub.add_parser("gallery", help="build a gallery index (.npy + names) from a folder-per-person dataset")
    q.add_argument("dataset")
    q.add_argument("out")
    q.add_argument("--evaluator", default="sface", choices=EVALUATORS)
    q.add_argument("--weights")

    def run_gallery(a):
        from deid_core.evaluate.gallery import run_gallery  # keeps deid --help free of torch
        g = run_gallery(a.dataset, a.out, a.evaluator, a.weights)
        print(json.dumps({"identities": len(g), "dim": int(g.means.shape[1]), "out": a.out}))
        return 0
    q.set_defaults(func=run_gallery)

    q = sub.add_parser("table3", help="Table 3: RGB / descriptor distance, de-ID vs blur, pixelation, [41] swap")
    q.add_argument("--images", help="image folder (default: the embedded NASA portraits)")
    q.add_argument("--donors", help="donor faces for the [41] swap (default: the same images)")
    q.add_argument("--max-images", type=int, default=8)
    _common(q)

    def run_t3(a):
        from deid_core.evaluate.conditions import DEFAULT_EVALUATORS  # keeps deid --help free of torch
        from deid_core.evaluate.distances import run_table3  # keeps deid --help free of torch
        t3 = run_table3(a.images, a.checkpoint, a.evaluator or list(DEFAULT_EVALUATORS), a.donors,
                        a.max_images, a.weights, **_kw(a, lam=a.lam))
        print(t3.table.to_string(index=False))
        return 0
    q.set_defaults(func=run_t3)

    q = sub.add_parser("lambda", help="Fig. 9: grid and distance vs λ")
    q.add_argument("--images")
    q.add_argument("--lams", type=float, nargs="+", help="λ values for one λ-conditioned --checkpoint")
    q.add_argument("--pair", action="append", metavar="LAM=CKPT", help="one checkpoint per λ (repeatable)")
    q.add_argument("--max-images", type=int, default=4)
    q.add_argument("--grid-rows", type=int, default=6, help="faces shown in the grid figure")
    _common(q, lam=False)

    def run_lam(a):
        from deid_core.evaluate.conditions import DEFAULT_EVALUATORS  # keeps deid --help free of torch
        from deid_core.evaluate.lambda_sweep import run_lambda  # keeps deid --help free of torch
        ck = {float(s.split("=", 1)[0]): s.split("=", 1)[1] for s in (a.pair or [])}
        if a.lams:
            if not a.checkpoint:
                raise DeidError("--lams needs --checkpoint (a λ-conditioned model)")
            ck.update({lam: a.checkpoint for lam in a.lams})
        if not ck:
            raise DeidError("give --checkpoint with --lams, or --pair LAM=CKPT ...")
        print(run_lambda(a.images, ck, a.evaluator or list(DEFAULT_EVALUATORS), a.max_images, a.weights,
                         grid_rows=a.grid_rows, **_kw(a)).to_string(index=False))
        return 0
    q.set_defaults(func=run_lam)

    q = sub.add_parser("naturalness", help="high-frequency ratios, YuNet retention, landmark NME, identity: "
                                           "real faces, de-ID, blur, pixelation")
    q.add_argument("--images", help="image folder (default: the 24 held-out NASA portraits)")
    q.add_argument("--max-images", type=int)
    q.add_argument("--lam", type=float, nargs="+", action="extend",
                   help="λ value(s) for a λ-conditioned --checkpoint (repeatable; default: its own)")
    q.add_argument("--no-baselines", action="store_true")
    _common(q, lam=False)

    def run_nat(a):
        from deid_core.evaluate.naturalness import run_naturalness  # keeps deid --help free of torch
        from deid_core.evaluate.conditions import DEFAULT_EVALUATORS  # keeps deid --help free of torch
        models = [(a.checkpoint, lam) for lam in (a.lam or [None])] if a.checkpoint else []
        if a.lam and not a.checkpoint:
            raise DeidError("--lam needs --checkpoint (a λ-conditioned model)")
        df = run_naturalness(a.images, models, a.max_images, a.evaluator or list(DEFAULT_EVALUATORS),
                             a.weights, not a.no_baselines, **_kw(a))
        print(df.to_string(index=False))
        return 0
    q.set_defaults(func=run_nat)

    q = sub.add_parser("gates", help="the natural-face gates of one model: naturalness and identity "
                                     "(held-out and in the wild), blur/pixelation at equal RGB, the dial")
    q.add_argument("--images", help="held-out faces (default: the 24 held-out NASA portraits)")
    q.add_argument("--wild", help="in-the-wild stills too (e.g. results/video_frames from "
                                  "scripts/video_frames.py)")
    q.add_argument("--max-images", type=int, default=24)
    _common(q)

    def run_gate(a):
        from deid_core.evaluate.gates import run_gates  # keeps deid --help free of torch
        if not a.checkpoint:
            raise DeidError("deid eval gates needs --checkpoint")
        table = run_gates(a.checkpoint, a.lam, a.images, a.wild, a.max_images, a.evaluator,
                          a.weights, **_kw(a))
        print(table.to_string(index=False))
        checked = table[table["passed"] != "n/a"]
        print(f"{int((checked['passed'] == 'yes').sum())} of {len(checked)} gates pass")
        return 0
    q.set_defaults(func=run_gate)

    q = sub.add_parser("attributes", help="landmark NME, head-pose difference, detection retention")
    q.add_argument("--images")
    q.add_argument("--max-images", type=int, default=16)
    q.add_argument("--checkpoint")
    q.add_argument("--name")

    def run_attr(a):
        from deid_core.evaluate.attributes import run_attributes  # keeps deid --help free of torch
        print(run_attributes(a.images, a.checkpoint, a.max_images, **_kw(a)).to_string(index=False))
        return 0
    q.set_defaults(func=run_attr)

    q = sub.add_parser("user-study", help="Table 2 kit: make sheets, score responses, automatic observer")
    us = q.add_subparsers(dest="study_command", metavar="ACTION")
    s = us.add_parser("score", help="responses CSV + answer key → Table 2a and confusion figures 2c/2d")
    s.add_argument("responses")
    s.add_argument("key")
    s.add_argument("--name", default="table2")
    s.add_argument("--label", default="")

    def run_score(a):
        from deid_core.evaluate.user_study import score_study  # keeps deid --help free of torch
        out = score_study(a.responses, a.key, a.name, a.label)
        print(json.dumps({k: v for k, v in out.items() if not k.startswith("confusion")}, indent=2, default=str))
        return 0
    s.set_defaults(func=run_score)
    s = us.add_parser("videos", help="video trial sheet (random order) with the answer key kept apart")
    s.add_argument("--real", nargs="+", required=True)
    s.add_argument("--modified", nargs="+", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)

    def run_videos(a):
        from deid_core.evaluate.user_study import make_video_trials  # keeps deid --help free of torch
        sheet, key = make_video_trials(a.real, a.modified, a.out, a.seed)
        print(json.dumps({"trials": str(sheet), "answer_key": str(key)}))
        return 0
    s.set_defaults(func=run_videos)
    s = us.add_parser("sheet", help="still-image identification sheet (gallery / input / de-ID)")
    s.add_argument("--gallery", required=True, help="folder: one gallery image per person (file stem = name)")
    s.add_argument("--inputs", required=True, help="folder: one input image per person (same stems)")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--lam", type=float)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)

    def run_sheet(a):
        from deid_core.evaluate.conditions import load_faces  # keeps deid --help free of torch
        from deid_core.evaluate.user_study import identification_sheet  # keeps deid --help free of torch
        g_ims, _, g_names = load_faces(a.gallery)
        i_ims, _, i_names = load_faces(a.inputs)
        out = identification_sheet(dict(zip(g_names, g_ims)), dict(zip(i_names, i_ims)),
                                   a.checkpoint, a.out, a.seed, lam=a.lam)
        print(json.dumps({k: str(v) for k, v in out.items()}))
        return 0
    s.set_defaults(func=run_sheet)
    s = us.add_parser("auto", help="automatic observer: fill a responses CSV with an independent recognizer")
    s.add_argument("trials")
    s.add_argument("--out", required=True, help="responses CSV to write")
    s.add_argument("--evaluator", default="sface", choices=EVALUATORS)
    s.add_argument("--weights")

    def run_auto(a):
        from deid_core.evaluate.conditions import load_evaluators  # keeps deid --help free of torch
        from deid_core.evaluate.user_study import write_csv, automatic_observer  # keeps deid --help free of torch
        df = automatic_observer(a.trials, net=load_evaluators([a.evaluator], a.weights)[0],
                                observer=f"auto-{a.evaluator}")
        write_csv(df, Path(a.out), f"automatic observer ({a.evaluator}), not people")
        print(json.dumps({"responses": a.out, "answers": len(df)}))
        return 0
    s.set_defaults(func=run_auto)

    def need_action(a):
        q.print_help()
        return 2
    q.set_defaults(func=need_action)

    def need_table(a):
        p.print_help()
        return 2
    p.set_defaults(func=need_table)
