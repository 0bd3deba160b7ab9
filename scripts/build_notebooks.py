#!/usr/bin/env python
"""Generate notebooks/*.ipynb (without outputs) from the cell sources below.

    .venv/bin/python scripts/build_notebooks.py          # rewrite notebooks/
    .venv/bin/python scripts/build_notebooks.py --check  # exit 1 if notebooks/ is stale

The notebooks are thin narratives over ``deid_core``: every computation is a package call (the
same the CLI makes). Each has one cell tagged ``parameters`` whose names are those that
``deid_core.profiles.notebook_parameters`` injects (papermill), with the smoke defaults, so a
notebook opened in JupyterLab runs as is.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deid_core.profiles import NOTEBOOKS, get_profile, notebook_parameters  # noqa: E402

KERNEL = {"name": "deid", "display_name": "deid (.venv)", "language": "python"}


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip())


def code(src: str, tags: list[str] | None = None) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(textwrap.dedent(src).strip())
    if tags:
        cell.metadata["tags"] = tags
    return cell


def params(name: str) -> nbformat.NotebookNode:
    """The ``parameters`` cell: the smoke profile's values, folders resolved at run time."""
    values = notebook_parameters(name, get_profile("smoke", "cpu"), "results")
    values.update(results_dir=None, sample_dir=None, shared_data_dir="auto", device="auto")
    lines = ["# Parameters (papermill injects the profile's values below this cell)."]
    comments = {
        "profile": "smoke | paper",
        "device": "auto | cpu | cuda",
        "results_dir": "None: $DEID_RESULTS or results/",
        "sample_dir": "None: the embedded data/sample/",
        "shared_data_dir": "'auto': ../shared/data when present; None: never",
        "data_dir": "your datasets (LFW, CelebA, ...), or None",
    }
    for key, value in values.items():
        comment = f"  # {comments[key]}" if key in comments else ""
        lines.append(f"{key} = {value!r}{comment}")
    return code("\n".join(lines), tags=["parameters"])


SETUP = """
    %matplotlib inline
    from pathlib import Path
    import numpy as np
    import matplotlib.pyplot as plt
    from IPython.display import display, Markdown
    from deid_core import paths, plots, report
    from deid_core.profiles import resolve_runtime
    rt = resolve_runtime(device=device, results_dir=results_dir, sample_dir=sample_dir,
                         shared_data_dir=shared_data_dir, seed=seed)
    results, sample, shared, device = rt.results, rt.sample, rt.shared, rt.device
    print(f"profile={profile} device={device} seed={seed}\\nresults -> {results}\\nshared data: {shared}")
"""


# ----------------------------------------------------------------------------------------
def nb_00() -> list:
    return [
        md("""
        # 00 · Setup and data

        *Live Face De-Identification in Video* (Gafni, Wolf, Taigman, ICCV 2019) maps a face to
        a version of itself whose identity is pushed away from the original, while pose,
        expression, lip articulation, illumination and skin tone stay (Sec. 1, Fig. 1). This
        notebook checks the environment, lists the data sources, and runs the test-time face
        preparation of Sec. 3 (steps a–d: detection, 68 landmarks, similarity transform to an
        averaged-face template, warp to a square crop) on the embedded sample.
        """),
        params("00_setup_and_data"),
        code(SETUP),
        md("""
        ## Environment
        Versions, CUDA, and the pretrained model files the kit uses (the dlib ResNet-29 loss
        network and landmark predictor, the evaluator networks). Same as `deid info`.
        """),
        code("""
        import pandas as pd
        from deid_core.envcheck import environment_report
        env = environment_report()
        display(pd.DataFrame({"value": {k: v for k, v in env.items() if not isinstance(v, dict)}}))
        display(pd.DataFrame({"version": env["packages"]}))
        display(pd.DataFrame({"file": env["models"]}))
        missing = [k for k, v in env["models"].items() if str(v).startswith("MISSING")]
        print("model files missing:", missing or "none")
        """),
        md("""
        ## Data sources
        * **Embedded sample** (`data/sample/`, public domain): NASA astronaut portraits (one per
          person), in-flight ISS photos of some of them (same-person pairs), and a short clip.
        * **Shared research data** (`../shared/data` or `$DEID_SHARED_DATA`, only on the
          development machines): LFW-a with `pairs.txt`, CelebA crops, more clips. Research use
          only; never committed. A fresh machine has none, and the smoke profile does not need it.
        * **Your data** (`--data DIR` of `run_all.sh`): LFW, CelebA, CelebA-HQ, FaceForensics
          from a local path (the paper profile).
        """),
        code("""
        from deid_core.profiles import data_sources
        sources = data_sources(sample_dir=sample, shared_dir=shared, user_dir=data_dir)
        display(pd.DataFrame(sources))
        """),
        md("""
        ## Face preparation (Sec. 3, steps a–d)
        dlib HOG detection → 68 landmarks → least-squares similarity to the averaged-face
        template → 128×128 crop. `prepare_faces` writes the aligned crops and an index (the
        training cache of notebook 01).
        """),
        code("""
        from deid_core.align import prepare_faces, read_face_index, read_image
        faces_dir = results / "faces" / "sample-128"
        summary = prepare_faces(sample / "portraits", faces_dir, size=128, limit=n_prepare,
                                progress=False)
        print({k: v for k, v in summary.to_json().items() if k != "skipped"})
        index = read_face_index(faces_dir)
        """),
        code("""
        crops = [read_image(faces_dir / r["path"]) for r in index]
        fig = plots.image_grid(crops, titles=[r["person"].replace("_", " ") for r in index],
                               landmarks=[np.asarray(r["landmarks"]) for r in index], ncols=8)
        report.save_figure(fig, "aligned_faces", results)
        plt.show()
        """),
        code("""
        report.save_results("00_setup_and_data", {
            "profile": profile, "device": device, "cuda": env["cuda"],
            "models_missing": missing, "n_portraits": len(list((sample / "portraits").glob("*.jpg"))),
            "n_aligned": len(index), "faces_dir": str(faces_dir),
            "shared_data": shared is not None,
        }, results)
        """),
    ]


def nb_01() -> list:
    return [
        md("""
        # 01 · Training (Sec. 3.1, 3.2, 4)

        The generator is an encoder–decoder (Fig. 2a): five strided depth-wise separable
        convolutions, a fully connected latent to which the target's identity descriptor
        (dlib ResNet-29, frozen) is concatenated, a decoder of upscale and residual blocks, a
        32×32×1 U-net connection, and two heads: a raw image and a blending mask. Training
        uses the source as its own target, distorts the encoder input (scale, rotation,
        elastic), and minimises the compound loss of Sec. 3.2: LSGAN with mixup,
        reconstruction, image-derivative, mask and mask-derivative terms, and the
        multi-image perceptual loss whose −λ term pushes the output's descriptor away from
        the target's. The paper trains 230k iterations on 260k faces with batch 32 and
        Adam (1e-4, β = 0.5, 0.99), λ rising from 1e-7 to 2e-6 in four steps.

        Here: the `-lamcond` variant (beyond the paper, issue 9) samples λ per example so
        that one network serves every λ at inference (notebook 02's slider). The smoke
        profile trains a few dozen steps on CPU — enough to see every loss term move, not to
        de-identify well; the later notebooks use the committed starter checkpoint
        (`data/checkpoints/`) when present. Same call as
        `deid train --preset PRESET --data FACES --out RUN_DIR --steps N`.
        """),
        params("01_train"),
        code(SETUP),
        md("## Training data (face caches of `align.prepare_faces`)"),
        code("""
        from deid_core.align import prepare_faces
        if train_data == "sample":
            faces = [Path(report.load_results("00_setup_and_data", results)["faces_dir"])]
        else:
            src = Path(data_dir) if train_data == "user" else shared / "celeba-wild-256"
            cache = paths.cache_dir() / "faces" / f"{src.name}-{preset.split('-')[1]}"
            prepare_faces(src, cache, size=int(preset.split("-")[1]), progress=True)
            faces = [cache]
        print("face caches:", [str(f) for f in faces])
        """),
        md("## Run"),
        code("""
        from deid_core.train import TrainConfig, train
        import shutil
        run_dir = results / "runs" / f"{profile}-{preset}"
        shutil.rmtree(run_dir, ignore_errors=True)     # a fresh run (its losses.csv would be appended to)
        cfg = TrainConfig(preset=preset, data=[str(f) for f in faces], out=str(run_dir),
                          steps=steps, batch=batch_size, device=device, seed=seed,
                          log_every=1, sample_every=max(1, steps // 2), ckpt_every=0)
        trainer = train(cfg, progress=False)
        print(f"{trainer.step} steps in {trainer.seconds:.0f} s "
              f"({trainer.seconds / max(1, len(trainer.history)):.2f} s/step on {device})")
        """),
        md("## Loss curves, one per term of Sec. 3.2"),
        code("""
        import pandas as pd
        losses = pd.read_csv(run_dir / "losses.csv")
        fig = plots.loss_curves({c: losses[c].tolist() for c in losses.columns if c != "step"},
                                steps=losses["step"].tolist())
        report.save_figure(fig, "train_losses", results)
        plt.show()
        losses.tail(3)
        """),
        md("## Sample grid (source | output | mask) at the last step"),
        code("""
        from IPython.display import Image
        samples = sorted((run_dir / "samples").glob("*.png"))
        print(samples[-1])
        Image(filename=str(samples[-1]), width=720)
        """),
        md("""
        ## The checkpoint the next notebooks use
        The committed starter checkpoint (`data/checkpoints/`, see its model card) when present
        and `use_starter_checkpoint`, else the one just trained.
        """),
        code("""
        from deid_core.paths import default_checkpoint
        trained = run_dir / "checkpoint.pt"
        starter = default_checkpoint(preset) if use_starter_checkpoint else None
        checkpoint = starter or trained
        print("trained here:", trained, "\\nused next:   ", checkpoint)
        first, last = losses.iloc[0], losses.iloc[-1]
        report.save_results("01_train", {
            "preset": preset, "steps": int(trainer.step), "batch": batch_size, "device": device,
            "seconds": trainer.seconds, "s_per_step": trainer.seconds / max(1, len(trainer.history)),
            "trained_checkpoint": str(trained), "checkpoint": str(checkpoint),
            "starter_used": starter is not None,
            "loss_first": {k: float(first[k]) for k in losses.columns if k != "step"},
            "loss_last": {k: float(last[k]) for k in losses.columns if k != "step"},
        }, results)
        """),
    ]


# ----------------------------------------------------------------------------------------
CHECKPOINT = """
    # The model: the checkpoint chosen by notebook 01 (the committed starter checkpoint
    # when present, else the one trained there), unless `checkpoint` is given.
    ckpt = Path(checkpoint) if checkpoint else Path(report.load_results("01_train", results)["checkpoint"])
    print("checkpoint:", ckpt)
"""


def nb_05() -> list:
    return [
        md("""
        # 05 · Video demo

        The paper applies the test-time steps (a)–(h) to every frame of a video (Sec. 3, 4),
        keeping pose, expression and lip motion, and shows in its user study (Table 2a) that
        viewers can hardly tell the de-identified video from the real one. Here the embedded
        public-domain clip (NASA portraits animated, with a synthetic audio track, one and
        then two faces, a few frames without a face) goes through `deid_core.video` — the
        same call as `deid video IN OUT --checkpoint CKPT` — with its audio kept.
        """),
        params("05_video_demo"),
        code(SETUP),
        code(CHECKPOINT),
        code("""
        from deid_core.video import (VideoConfig, build_pipeline, deidentify_video, measure_flicker,
                                     probe_video, read_frames)
        clip_path = Path(clip) if clip else sample / "clip" / "nasa_clip.mp4"
        src_info = probe_video(clip_path)
        print(src_info.to_json())
        aligner, net = build_pipeline(ckpt, target=None, lam=lam, device=device)
        out_path = results / "video" / f"{clip_path.stem}_deid.mp4"
        out_path.parent.mkdir(parents=True, exist_ok=True)
        cfg = VideoConfig(max_frames=max_frames or None, progress=False)
        summary = deidentify_video(clip_path, out_path, aligner, net, cfg, overwrite=True)
        out_info = probe_video(out_path)
        print({k: summary[k] for k in ("frames", "frames_with_faces", "frames_no_face", "tracks",
                                       "fps", "audio", "warnings")})
        """),
        md("""
        ## Side by side
        Source frames (top) and de-identified frames (bottom), including a frame with two
        faces (each track is de-identified with its own first appearance as the target).
        """),
        code("""
        n = summary["frames"]
        src_frames = read_frames(clip_path, n)
        out_frames = read_frames(out_path, n)
        picks = sorted(set(np.linspace(0, n - 1, 5).round().astype(int).tolist()))
        fig = plots.image_grid([src_frames[i] for i in picks] + [out_frames[i] for i in picks],
                               titles=[f"source #{i}" for i in picks] + [f"de-ID #{i}" for i in picks],
                               ncols=len(picks), size=2.6)
        report.save_figure(fig, "video_side_by_side", results)
        plt.show()
        """),
        md("""
        ## Flicker and speed
        Flicker ratio: mean absolute frame-to-frame change inside the source's face hulls,
        output over input (1 = as steady as the source). fps: frames per second of the whole
        file pipeline (decode, detect, align, network, paste, encode) on this machine.
        """),
        code("""
        flick = measure_flicker(clip_path, {"deid": out_path}, aligner, max_frames=n)
        import pandas as pd
        video_table = pd.DataFrame([{
            "clip": clip_path.name, "frames": summary["frames"], "device": device,
            "fps": summary["fps"], "ms_per_frame_net": summary["ms_per_frame"].get("net"),
            "flicker_ratio": flick["deid"], "audio_in": src_info.audio_codec,
            "audio_out": out_info.audio_codec, "audio_mode": summary["audio"]["mode"],
            "paper": "no fps/flicker number (per-frame method; Table 2a: viewers 53.6 % real vs modified)",
        }])
        report.save_table(video_table, "video_demo", results,
                          caption="Video demo on the embedded clip (the paper reports no fps or "
                                  "flicker number; Table 2a is its video user study).")
        display(video_table)
        """),
        md("## Player"),
        code("""
        from IPython.display import Video
        Video(str(out_path), embed=True, mimetype="video/mp4", html_attributes="controls loop",
              width=min(640, out_info.width))
        """),
        code("""
        report.save_results("05_video_demo", {
            "clip": str(clip_path), "output": str(out_path), "frames": summary["frames"],
            "frames_in": src_info.frames, "frames_with_faces": summary["frames_with_faces"],
            "tracks": summary["tracks"], "fps": summary["fps"], "flicker_ratio": flick["deid"],
            "audio_in": src_info.audio_codec, "audio_out": out_info.audio_codec,
            "width": out_info.width, "height": out_info.height,
            "same_size": (out_info.width, out_info.height) == (src_info.width, src_info.height),
        }, results)
        """),
    ]


def nb_02() -> list:
    return [
        md("""
        # 02 · λ sweep (Fig. 9) and the λ dial

        λ weighs the term of the multi-image perceptual loss that pushes the output's identity
        descriptor away from the target's (Sec. 3.2); the paper calls it "effectively the only
        important hyperparameter" and shows in Fig. 9 how growing λ (five separately trained
        models) shifts the identity gradually. Here one λ-conditioned network (beyond the
        paper, issue 9) is asked for each λ at inference, and the shift is measured with two
        independent recognisers (never the loss network): FaceNet trained on CASIA-WebFace
        and SFace. Below the static sweep, an interactive dial: a log slider for λ and pickers
        for the source and the target identity re-render the de-identified face live (run the
        notebook in JupyterLab; under papermill only its first rendering is stored).
        """),
        params("02_lambda_sweep"),
        code(SETUP),
        code(CHECKPOINT),
        code("""
        from IPython.display import Image
        from deid_core.align import AlignConfig, FaceAligner, align_face, read_image
        from deid_core.evaluate.lambda_sweep import lambda_sweep
        from deid_core.evaluate.run import deid_transform, load_evaluators
        from deid_core.inference import Deidentifier
        deid = Deidentifier.from_checkpoint(ckpt, device)
        aligner = FaceAligner(AlignConfig(size=128))
        portraits = sorted((sample / "portraits").glob("*.jpg"))
        images = {p.stem: read_image(p) for p in portraits}
        faces = {name: aligner.detect(img)[0] for name, img in images.items()}
        nets = load_evaluators(evaluator_names, device=device)
        sources = list(images)[:n_faces]
        """),
        md("""
        ## Sweep
        Each source is its own target (as in training, Fig. 2b). Descriptor distance: L2
        between the unit-normalised evaluator embeddings of the source face and the output
        face (0–2); RGB: mean absolute pixel difference (0–255).
        """),
        code("""
        sweep = lambda_sweep([images[n] for n in sources], [faces[n].landmarks for n in sources],
                             {lam: deid_transform(ckpt, lam=lam, device=device) for lam in lams},
                             nets, name="fig9_lambda_sweep", labels=sources)
        display(sweep)
        display(Image(filename=str(results / "figures" / "fig9_lambda_sweep.png")))
        display(Image(filename=str(results / "figures" / "fig9_lambda_sweep_distance.png")))
        """),
        code("""
        curves = {n: sweep[sweep["evaluator"] == n].sort_values("lambda") for n in evaluator_names}
        rho = sweep.attrs["spearman"]
        print("Spearman ρ(λ, descriptor distance):", rho)
        print("landmark NME by λ:", curves[evaluator_names[0]]["landmark NME"].round(4).tolist())
        """),
        md("""
        ## The λ dial (interactive)
        Move the slider or pick another source or target: the output is recomputed with the
        same network. The slider follows the model's dial: log-scaled λ for a paper-recipe
        model; linear from 0 to λ_max for a `deid`-recipe model, whose repeller margin (the
        identity distance it asks for) grows in proportion to λ. Choosing a different person as the target gives the
        network that person's descriptor to move away from (the paper's test-time setting,
        Sec. 3: "a target image, which is any image of the person").
        """),
        code("""
        target_embeddings = {}

        def target_embedding(name):
            if name not in target_embeddings:
                target_embeddings[name] = deid.embed_target(images[name])
            return target_embeddings[name]

        def render(source, target, lam):
            t = source if target == "(itself)" else target
            out, _ = deid(images[source], target_embedding(t), lam=lam)
            return align_face(out, aligner, faces[source])["crop"]

        positions = deid.dial(5)      # the model's own dial: linear for the deid recipe
        dial = plots.lambda_explorer(
            render, sources=list(images), targets=["(itself)", *images],
            lam_value=positions[len(positions) // 2], lam_max=max(positions[-1], 1e-5),
            scale=deid.cfg.lam_scale,
            source_image=lambda s: align_face(images[s], aligner, faces[s])["crop"])
        display(dial)
        """),
        code("""
        report.save_results("02_lambda_sweep", {
            "lams": list(lams), "n_sources": len(sources), "checkpoint": str(ckpt),
            "distance": {n: c["descriptor distance"].tolist() for n, c in curves.items()},
            "rgb_distance": curves[evaluator_names[0]]["RGB distance"].tolist(),
            "same_person_rate": {n: c["same-person rate"].tolist() for n, c in curves.items()},
            "spearman": rho,
        }, results)
        """),
    ]


def nb_03() -> list:
    return [
        md("""
        # 03 · Identity evaluation (Tables 3, 4, 5)

        The paper measures de-identification automatically with recognisers it did not train
        with: Table 3 (pixel vs descriptor distance, against the dataset face swap of [41]),
        Table 4 (rank of the true identity among 54,000 persons with ArcFace) and Table 5
        (LFW verification, TPR at FAR = 1e-3, FaceNet CASIA-WebFace and VGGFace2). Our
        evaluators are FaceNet CASIA-WebFace and SFace (the loss network, dlib, is never an
        evaluator). Baselines we run ourselves: Gaussian blur with σ fitted so the pixel
        distance matches the paper's level, pixelation, and a [41]-style swap with the
        nearest dissimilar sample face. Every table is written with the paper's number beside
        ours (`deid_core.evaluate`, the same functions as `deid eval ...`).

        Smoke profile: Table 3 and a small Table 4 on the 24 embedded NASA portraits; Table 5
        (and the LFW-scale Table 4) run when LFW is available (`--data`, or the shared data
        on development machines), otherwise their tables say so.
        """),
        params("03_identity_evaluation"),
        code(SETUP),
        code(CHECKPOINT),
        code("""
        import pandas as pd
        from deid_core.align import AlignConfig, FaceAligner, read_image
        from deid_core.evaluate import metrics
        from deid_core.evaluate.baselines import swap_transform
        from deid_core.evaluate.run import baseline_transforms, deid_transform, load_evaluators
        from deid_core.evaluate.tables import table3, write_table
        aligner = FaceAligner(AlignConfig(size=128))
        portraits = sorted((sample / "portraits").glob("*.jpg"))[:n_identities]
        names = [p.stem for p in portraits]
        images = [read_image(p) for p in portraits]
        landmarks = [aligner.detect(im)[0].landmarks for im in images]
        nets = load_evaluators(evaluators, device=device)
        deid_fn = deid_transform(ckpt, lam=lam, device=device)
        # blur σ is fitted (pixel distance ≈ the paper's Table 3 level) on a few faces: cheap enough
        base, base_info = baseline_transforms(images[:4], landmarks[:4])
        donor_emb = np.concatenate([nets[0].embed_faces(im, [lm]) for im, lm in zip(images, landmarks)])
        transforms = {"deid": deid_fn, **base,
                      "swap [41]": swap_transform(images, landmarks, donor_emb, nets[0], aligner)}
        outputs = {k: [fn(im, lm) for im, lm in zip(images, landmarks)] for k, fn in transforms.items()}
        print(base_info)
        """),
        code("""
        k = min(4, len(images))
        fig = plots.image_grid([im for im in images[:k]] + [outputs[m][i] for m in outputs for i in range(k)],
                               titles=["original"] * k + [m for m in outputs for _ in range(k)], ncols=k, size=2.2)
        report.save_figure(fig, "table3_examples", results)
        plt.show()
        """),
        md("## Table 3 — distance between original and modified images"),
        code("""
        t3 = table3(images, landmarks, outputs, nets, labels=names,
                    notes=[f"Images: the {len(images)} embedded NASA portraits (the paper: 3 images of Fig. 7).",
                           f"Model: {ckpt.name}" + (f", λ = {lam}" if lam is not None else "")])
        display(t3)
        """),
        md("""
        ## Table 4 (small) — rank of the true identity among the sample's identities
        Gallery: each evaluator's embedding of the original portraits. Probes: the modified
        portraits (the strongest attack: the very same photo); the `original` row is rank 1 by
        construction. The LFW-scale Table 4 follows when LFW is available.
        """),
        code("""
        rows = []
        for net in nets:
            gallery = np.concatenate([net.embed_faces(im, [lm]) for im, lm in zip(images, landmarks)])
            for cond, outs in {"original": images, **outputs}.items():
                probes = np.concatenate([net.embed_faces(o, [lm]) for o, lm in zip(outs, landmarks)])
                sim = np.stack([metrics.cosine_similarity(np.repeat(p[None], len(gallery), 0), gallery)
                                for p in probes])
                s = metrics.rank_summary(metrics.ranks_from_similarity(sim, np.arange(len(images))), len(images))
                rows.append({"evaluator": net.name, "condition": cond, "probes": s["n"],
                             "median": s["median"], "mean ± SD": f"{s['mean']:.1f} ± {s['sd']:.1f}",
                             "rank-1": round(s["rank1"], 3), "median % of gallery": round(s["median_pct"], 1),
                             "paper": {"original": "median 1 of 54,000",
                                       "deid": "median 3773 of 54,000 (7.0%), low-res"}.get(cond, "")})
        t4s = pd.DataFrame(rows)
        write_table("table4_rank_sample", t4s, f"Table 4 (small) — rank of the true identity among "
                    f"{len(images)} NASA identities", [
                        "Probes are the modified gallery photos themselves; chance median rank = "
                        f"{(len(images) + 1) / 2:.1f}.", "Paper: ArcFace, 54,000 identities, video frames."])
        display(t4s)
        """),
        md("## Table 5 and Table 4 on LFW (when available)"),
        code("""
        from deid_core.evaluate.run import run_lfw, run_rank
        lfw_root = None
        for cand in ([Path(data_dir) / "lfw", Path(data_dir) / "lfw-a", Path(data_dir)] if data_dir else []) + \\
                    ([shared / "lfw-a"] if shared else []):
            if (cand / "pairs.txt").is_file() or (cand.parent / "pairs.txt").is_file():
                lfw_root = cand
                break
        t5 = t4 = None
        if lfw_root is not None and lfw_pairs > 0:
            per_fold = max(1, lfw_pairs // 20)
            t5 = run_lfw(evaluators, str(lfw_root), per_fold=per_fold if lfw_pairs < 6000 else None,
                         checkpoint=str(ckpt), baselines=profile == "paper", seed=seed, progress=False)
            display(t5)
            if profile == "paper":
                t4 = run_rank("sface", str(lfw_root), checkpoint=str(ckpt), seed=seed, progress=False)
                display(t4)
        else:
            why = ("no LFW found (pass --data DIR holding lfw/ with pairs.txt)" if lfw_root is None else
                   f"not run in the {profile} profile (lfw_pairs = 0); run `deid eval lfw --checkpoint CKPT` "
                   "or ./run_all.sh --profile paper")
            note = pd.DataFrame([{"evaluator": e, "condition": "not run", "TPR@FAR=0.001": "",
                                  "paper": {"facenet-casia": "0.965 → 0.035"}.get(e, "")} for e in evaluators])
            write_table("table5_lfw", note, "Table 5 — LFW verification (not run)", [why])
            print("Table 5 not run:", why)
        """),
        code("""
        def _num(x):
            return float(str(x).split("±")[0]) if str(x).strip() else None
        t3n = {f"{r['method']}|{r['evaluator']}": {"rgb": _num(r["RGB distance"]),
                                                    "desc": _num(r["face descriptor distance"]),
                                                    "same_rate": r["same-person rate"]}
               for _, r in t3.iterrows()}
        report.save_results("03_identity_evaluation", {
            "checkpoint": str(ckpt), "n_images": len(images), "evaluators": list(evaluators),
            "table3": t3n,
            "table4_sample": {f"{r['condition']}|{r['evaluator']}": {"median": r["median"], "rank1": r["rank-1"]}
                              for _, r in t4s.iterrows()},
            "table5_run": t5 is not None, "lfw_root": str(lfw_root) if lfw_root else None,
            "baselines": base_info,
        }, results)
        """),
    ]


def nb_04() -> list:
    return [
        md("""
        # 04 · User study kit (Table 2)

        The paper asked people two questions. (a) Video: shown single clips, is this a real
        video or a modified one? 20 observers, 8 videos: 53.6 % success (SD 13.0 %), close to
        the 50 % of chance. (b–d) Still images: five persons of similar appearance, a gallery
        ("album") row, then input images and their de-identified versions in random order;
        the observers pick the gallery person. The originals are recognised (confusion matrix
        2c is diagonal), the de-identified images are not (2d).

        This notebook builds that material with `deid_core.evaluate.user_study` (sheets as
        HTML/PNG, the answer key in its own folder), scores a responses CSV into Table 2a and
        the two confusion matrices, and — so the chain runs without people — fills the
        responses with an **automatic observer** (an independent recogniser for the
        identification task; face-region flicker for the video task). The committed example
        responses (`data/user_study/`, invented, marked EXAMPLE) show the schema.
        """),
        params("04_user_study"),
        code(SETUP),
        code(CHECKPOINT),
        md("""
        ## Still-image identification material (Table 2b)
        Album images: the in-flight photo where the sample has one (Andrew Morgan, Eileen
        Collins), otherwise — a smoke stand-in — the mirrored portrait. Inputs: the portraits.
        De-ID: the portraits through the model, each its own target.
        """),
        code("""
        from deid_core.align import AlignConfig, FaceAligner, align_face, read_image
        from deid_core.evaluate import user_study as us
        from deid_core.evaluate.run import load_evaluators
        from deid_core.inference import Deidentifier
        deid = Deidentifier.from_checkpoint(ckpt, device)
        show = FaceAligner(AlignConfig(size=256))          # loose face crops for the sheets
        inflight = {"Andrew_Morgan": "Andrew_Morgan_inflight.jpg", "Eileen_Collins": "Eileen_Collins_inflight.png"}
        others = [p.stem for p in sorted((sample / "portraits").glob("*.jpg")) if p.stem not in inflight]
        persons = (list(inflight) + others)[:n_persons]

        def crop(image):
            face = show.detect(image)[0]
            return align_face(image, show, face)["crop"]

        gallery, inputs, deids, album = {}, {}, {}, {}
        for name in persons:
            portrait = read_image(sample / "portraits" / f"{name}.jpg")
            if name in inflight:
                gallery[name], album[name] = crop(read_image(sample / "inflight" / inflight[name])), "in-flight photo"
            else:
                gallery[name], album[name] = crop(portrait)[:, ::-1].copy(), "mirrored portrait (stand-in)"
            out, _ = deid(portrait, deid.embed_target(portrait), lam=lam)
            inputs[name], deids[name] = crop(portrait), crop(out)
        study = results / "user_study"
        ident = us.make_identification_sheet(gallery, inputs, deids, study / "identify", seed=seed)
        print({k: str(v) for k, v in ident.items()})
        import shutil
        shutil.copyfile(ident["png"], results / "figures" / "table2b_sheet.png")   # for REPORT.md
        from IPython.display import Image
        Image(filename=str(ident["png"]))
        """),
        md("""
        ## Video material (Table 2a)
        Real clips and de-identified clips in random order (`trials.html`); here the embedded
        clip and its de-identified version (first seconds).
        """),
        code("""
        from deid_core.video import VideoConfig, build_pipeline, deidentify_video
        clip = sample / "clip" / "nasa_clip.mp4"
        aligner, net = build_pipeline(ckpt, target=None, lam=lam, device=device)
        mod = study / "clips" / "nasa_clip_deid.mp4"
        mod.parent.mkdir(parents=True, exist_ok=True)
        deidentify_video(clip, mod, aligner, net, VideoConfig(max_frames=40, progress=False), overwrite=True)
        video_trials, video_key = us.make_video_trials([clip], [mod], study / "video", seed=seed)
        print(video_trials, video_key)
        """),
        md("""
        ## Responses → Table 2a and confusion matrices 2c, 2d
        First the automatic observer (SFace; never the loss network), then the example
        responses that ship with the kit. Real studies: collect `responses.csv`
        (`observer, task, trial_id, answer`) and call `us.score_study(responses, key)`.
        """),
        code("""
        import pandas as pd
        observer_net = load_evaluators([evaluator], device=device)[0]
        auto_id = us.automatic_observer(ident["trials"], net=observer_net)
        auto_id.to_csv(study / "identify" / "responses_auto.csv", index=False)
        auto_video = us.automatic_observer(video_trials)
        auto_video.to_csv(study / "video" / "responses_auto.csv", index=False)
        s_id = us.score_study(study / "identify" / "responses_auto.csv", ident["key"],
                              name="table2_auto", label=f"automatic observer ({observer_net.name})")
        s_video = us.score_study(study / "video" / "responses_auto.csv", video_key,
                                 name="table2_auto", label="automatic observer (flicker)")
        print("identification accuracy: original", s_id.get("accuracy_original"),
              "de-ID", s_id.get("accuracy_deid"))
        display(s_id["confusion_original"], s_id["confusion_deid"])
        """),
        code("""
        example = us.score_study(paths.REPO_ROOT / "data" / "user_study" / "example_responses.csv",
                                 paths.REPO_ROOT / "data" / "user_study" / "example_answer_key.csv",
                                 name="table2_example", label="EXAMPLE: invented answers")
        print("example video success: %.1f ± %.1f %%" % (example["video"]["mean"], example["video"]["sd"]))
        for f in ["table2_auto_confusion_original", "table2_auto_confusion_deid"]:
            display(Image(filename=str(results / "figures" / f"{f}.png")))
        """),
        code("""
        report.save_results("04_user_study", {
            "persons": persons, "album": album,
            "auto_accuracy_original": s_id.get("accuracy_original"),
            "auto_accuracy_deid": s_id.get("accuracy_deid"),
            "auto_video_success": s_video["video"]["mean"] if "video" in s_video else None,
            "example_video_success": example["video"]["mean"],
            "example_video_sd": example["video"]["sd"],
            "confusion_deid": s_id["confusion_deid"].values.tolist(),
            "confusion_original": s_id["confusion_original"].values.tolist(),
        }, results)
        """),
    ]


def _stub(name: str, title: str):
    def build() -> list:
        return [md(f"# {title}\n\n(being written)"), params(name), code(SETUP),
                code(f"report.save_results({name!r}, {{'profile': profile, 'pending': True}}, results)")]
    return build


NOTEBOOK_BUILDERS = {
    "00_setup_and_data": nb_00,
    "01_train": nb_01,
    "02_lambda_sweep": nb_02,
    "03_identity_evaluation": nb_03,
    "04_user_study": nb_04,
    "05_video_demo": nb_05,
}


def build(name: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = KERNEL
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = NOTEBOOK_BUILDERS[name]()
    for i, cell in enumerate(nb.cells):   # stable ids keep diffs small
        cell["id"] = f"{name[:2]}-{i:02d}"
    return nb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a notebook differs")
    ap.add_argument("--out", default=str(ROOT / "notebooks"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stale = []
    for name in NOTEBOOKS:
        if name not in NOTEBOOK_BUILDERS:
            continue
        text = nbformat.writes(build(name)) + "\n"
        path = out / f"{name}.ipynb"
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("stale notebooks (run scripts/build_notebooks.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
