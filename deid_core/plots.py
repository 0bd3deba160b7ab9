"""Figure helpers shared by the notebooks and the report (matplotlib, RGB uint8 images)."""
from __future__ import annotations

import io
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str] | None = None,
               landmarks: Sequence[np.ndarray | None] | None = None, ncols: int = 6,
               size: float = 1.8, row_labels: Sequence[str] | None = None):
    """A grid of RGB uint8 images, optionally with 68-point landmarks drawn over them."""
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    aspect = images[0].shape[0] / images[0].shape[1] if n else 1.0
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, (size * aspect + 0.25) * nrows),
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(images[k])
        if landmarks is not None and landmarks[k] is not None:
            pts = np.asarray(landmarks[k])
            ax.scatter(pts[:, 0], pts[:, 1], s=2, c="lime")
        if titles is not None:
            ax.set_title(str(titles[k]), fontsize=7)
    if row_labels is not None:
        for r, label in enumerate(row_labels[:nrows]):
            axes[r, 0].text(-0.08, 0.5, label, transform=axes[r, 0].transAxes, rotation=90,
                            ha="right", va="center", fontsize=8)
    fig.tight_layout()
    return fig


def loss_curves(history: Mapping[str, Sequence[float]], steps: Sequence[int] | None = None,
                title: str = "training losses (Sec. 3.2 terms)"):
    """One log-scaled subplot per loss term (``history``: term -> values per logged step)."""
    terms = [k for k, v in history.items() if len(v) and k not in ("step", "time", "lam")]
    n = max(1, len(terms))
    ncols = min(4, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.4 * nrows), squeeze=False)
    for ax, term in zip(axes.flat, terms):
        vals = np.asarray(history[term], dtype=float)
        x = np.asarray(steps if steps is not None else np.arange(len(vals)))[: len(vals)]
        ax.plot(x, vals, lw=0.8, alpha=0.5 if len(vals) > 20 else 1.0)
        if len(vals) > 20:  # a running mean over ~5% of the run
            k = max(2, len(vals) // 20)
            ax.plot(x[k - 1:], np.convolve(vals, np.ones(k) / k, mode="valid"), lw=1.4)
        fin = vals[np.isfinite(vals)]
        if len(fin) and np.all(fin > 0) and fin.max() / fin.min() > 20:
            ax.set_yscale("log")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4)) if ax.get_yscale() == "linear" else None
        ax.set_title(term, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    for ax in list(axes.flat)[len(terms):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def png_bytes(image: np.ndarray) -> bytes:
    """RGB uint8 image -> PNG bytes (for ``ipywidgets.Image``)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def lambda_explorer(render, sources: Sequence[str], targets: Sequence[str],
                    lam_value: float = 1e-6, lam_min: float = 1e-8, lam_max: float = 1e-5,
                    source_image=None, scale: str = "log"):
    """The λ dial of notebook 02: a slider for λ (``scale="log"``: a ``FloatLogSlider`` for
    the paper's λ; ``"linear"``: 0 … ``lam_max`` in 20 even steps, the ``deid`` recipe's dial
    whose margin grows linearly with λ), a source and a target ``Dropdown``, and the
    de-identified face re-rendered live on every change.

    ``render(source, target, lam) -> RGB uint8`` does the work (a package call); the widget
    only wires it. ``source_image(source) -> RGB uint8`` shows the input beside the output.
    λ = 0 is reachable with the "λ = 0" toggle (a log slider cannot reach it).
    Returns the ``VBox`` (display it); its initial images are rendered now, so the saved
    widget state shows them in JupyterLab without a kernel.
    """
    import ipywidgets as w  # optional: notebooks only

    if scale == "linear":
        slider = w.FloatSlider(value=lam_value, min=0.0, max=lam_max, step=lam_max / 20,
                               description="λ", readout_format=".1e", continuous_update=False,
                               layout=w.Layout(width="420px"))
    else:
        slider = w.FloatLogSlider(value=lam_value, base=10, min=float(np.log10(lam_min)),
                                  max=float(np.log10(lam_max)), step=0.05, description="λ",
                                  readout_format=".1e", continuous_update=False,
                                  layout=w.Layout(width="420px"))
    zero = w.Checkbox(value=False, description="λ = 0 (reconstruction)")
    src = w.Dropdown(options=list(sources), value=sources[0], description="source")
    tgt = w.Dropdown(options=list(targets), value=targets[0], description="target")
    inp = w.Image(format="png", width=192, height=192)
    out = w.Image(format="png", width=192, height=192)
    status = w.HTML()

    def update(*_):
        lam = 0.0 if zero.value else float(slider.value)
        try:
            img = render(src.value, tgt.value, lam)
        except Exception as exc:  # shown in the widget, not lost in a callback
            status.value = f"<span style='color:#b00'>{type(exc).__name__}: {exc}</span>"
            return
        out.value = png_bytes(img)
        if source_image is not None:
            inp.value = png_bytes(source_image(src.value))
        status.value = f"source <b>{src.value}</b>, target <b>{tgt.value}</b>, λ = {lam:.2e}"

    for widget in (slider, zero, src, tgt):
        widget.observe(update, names="value")
    update()
    return w.VBox([w.HBox([src, tgt]), w.HBox([slider, zero]),
                   w.HBox([w.VBox([w.HTML("input"), inp]), w.VBox([w.HTML("output"), out])]),
                   status])
