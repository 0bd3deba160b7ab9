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


def _stub(name: str, title: str):
    def build() -> list:
        return [md(f"# {title}\n\n(being written)"), params(name), code(SETUP),
                code(f"report.save_results({name!r}, {{'profile': profile, 'pending': True}}, results)")]
    return build


NOTEBOOK_BUILDERS = {
    "00_setup_and_data": nb_00,
    "01_train": _stub("01_train", "01 · Training"),
    "02_lambda_sweep": _stub("02_lambda_sweep", "02 · λ sweep (Fig. 9)"),
    "03_identity_evaluation": _stub("03_identity_evaluation", "03 · Identity evaluation (Tables 3-5)"),
    "04_user_study": _stub("04_user_study", "04 · User study (Table 2)"),
    "05_video_demo": _stub("05_video_demo", "05 · Video demo"),
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
