"""``report.html``: one self-contained page of an evaluation that opens offline, worst images first.

What people do after reading ``eval.json`` is look at the images the model gets wrong. The page holds the
summary table, per-class IoU/Dice bars, the row-normalised confusion matrix and a gallery with one row per
image (image | ground truth | prediction | errors) sorted worst first by the run's optimized metric, each with
its scores. Everything is inside the file (thumbnails as data URIs, SVG bars, no script or style from a CDN);
thumbnails are small JPEGs decoded only when scrolled into view, so a split of hundreds of images stays a page
a browser opens quickly. :class:`Gallery` collects the thumbnails while :func:`segkit.inference.evaluate` streams
the images, so memory holds a few KB per image, never the images themselves.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from segkit.metrics import metric_mode
from segkit.visualize import ERROR_COLOUR, IGNORED_COLOUR, error_map, overlay, row_shares

THUMBNAIL_SIDE = 192  # the longer side of each thumbnail panel, px


def as_rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` uint8 or float 0..1 image -> ``(H, W, 3)`` float32 in 0..1."""
    rgb = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
    rgb = rgb[..., None] if rgb.ndim == 2 else rgb
    return np.clip(np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb[..., :3], 0.0, 1.0)


def thumbnail_strip(image: np.ndarray, target: np.ndarray, pred: np.ndarray, colours: np.ndarray,
                    ignore_index: int, side: int = THUMBNAIL_SIDE) -> bytes:  # fmt: skip
    """The four panels side by side, each scaled to ``side`` px on its longer side, as JPEG bytes."""
    rgb = as_rgb(image)
    k = len(colours)
    panels = (
        rgb,
        overlay(rgb, target, k, ignore_index, colours=colours),
        overlay(rgb, pred, k, ignore_index, colours=colours),
        error_map(rgb, target, pred, ignore_index),
    )
    h, w = pred.shape
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BOX
    tiles = [Image.fromarray((p * 255).round().astype(np.uint8)).resize(size, resample) for p in panels]
    strip = Image.new("RGB", (4 * size[0] + 12, size[1]), "white")
    for i, tile in enumerate(tiles):
        strip.paste(tile, (i * (size[0] + 4), 0))
    buffer = io.BytesIO()
    strip.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def image_score(row: dict, metric: str) -> float:
    """The per-image value of ``metric`` (``val/miou``, ``val/iou_membrane``...) from a ``per_image.csv`` row."""
    leaf = metric.rsplit("/", 1)[-1]
    return float(row.get(leaf, row["miou"]))


class Gallery:
    """Thumbnails of the evaluated images, collected one image at a time.

    Args:
        colours: ``(K, 3)`` class colours in 0..1.
        ignore_index: mask value left out of scoring (shown yellow in the error panel).

    ``links`` maps an image's name to its full-size output (a path relative to the report) where one is written.
    """

    def __init__(self, colours: np.ndarray, ignore_index: int) -> None:
        self.colours, self.ignore_index = colours, ignore_index
        self.strips: dict[str, bytes] = {}
        self.links: dict[str, str] = {}

    def add(self, name: str, image: np.ndarray, target: np.ndarray, pred: np.ndarray, link: str | None = None) -> None:
        """Keep the thumbnail strip of one image (and the link to its full-size output)."""
        h, w = pred.shape
        if image.shape[:2] != (h, w):  # a valid-padding model scored the centre only
            top, left = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
            image = image[top : top + h, left : left + w]
            target = target[top : top + h, left : left + w]
        self.strips[name] = thumbnail_strip(image, target, pred, self.colours, self.ignore_index)
        if link:
            self.links[name] = link


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4f}"
    return html.escape(str(value))


def _bars(names: Sequence[str], scores: dict, prefix: str) -> str:
    """Per-class IoU and Dice as an inline SVG bar chart."""
    row_h, width, label_w = 22, 300, 140
    rows = []
    for i, name in enumerate(names):
        y = i * 2 * row_h
        for j, (what, colour) in enumerate((("iou", "#3b75af"), ("dice", "#ef8636"))):
            value = scores.get(f"{prefix}/{what}_{name}", float("nan"))
            length = 0 if math.isnan(value) else value * width
            rows.append(
                f'<rect x="{label_w}" y="{y + j * row_h + 3}" width="{length:.1f}" height="{row_h - 6}" '
                f'fill="{colour}"/><text x="{label_w + length + 4:.1f}" y="{y + j * row_h + 15}">'
                f"{what} {_fmt(value)}</text>"
            )
        rows.append(f'<text x="0" y="{y + row_h + 4}">{html.escape(name)}</text>')
    height = 2 * row_h * len(names)
    return f'<svg class="bars" width="{label_w + width + 90}" height="{height}">{"".join(rows)}</svg>'


def _confusion(confmat: np.ndarray, names: Sequence[str]) -> str:
    """Rows normalised to the share of each true class, shaded by it, with the raw counts."""
    counts, shares = np.asarray(confmat), row_shares(confmat)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = []
    for i, name in enumerate(names):
        cells = []
        for j in range(len(names)):
            share = shares[i, j]
            colour = "#fff" if share > 0.5 else "#000"
            cells.append(f'<td style="background:rgba(33,102,172,{share:.3f});color:{colour}">'
                         f"{share:.1%}<br><small>{int(counts[i, j]):,}</small></td>")  # fmt: skip
        body.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}</tr>")
    note = "Each row is one true class: the share of its pixels predicted as each class (raw counts below)."
    return f"<table class='cm'><tr><th>true \\ predicted</th>{head}</tr>{''.join(body)}</table><p>{note}</p>"


def _legend(names: Sequence[str], colours: np.ndarray) -> str:
    items = [
        f'<span class="key"><i style="background:rgb{tuple(int(c * 255) for c in colours[k])}"></i>'
        f"{html.escape(name)}{' (not coloured)' if k == 0 else ''}</span>"
        for k, name in enumerate(names)
    ]
    for colour, name in ((ERROR_COLOUR, "error"), (IGNORED_COLOUR, "ignored")):
        items.append(f'<span class="key"><i style="background:rgb{tuple(int(c * 255) for c in colour)}"></i>'
                     f"{name}</span>")  # fmt: skip
    return f'<div class="legend">{"".join(items)}</div>'


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}.cm td{min-width:4.5em;text-align:center}.bars text{font-size:12px}
.legend{margin:.5em 0}.key{margin-right:1.2em;white-space:nowrap}
.key i{display:inline-block;width:14px;height:14px;border:1px solid #444;margin-right:4px;vertical-align:middle}
.row{display:flex;gap:1em;align-items:flex-start;border-top:1px solid #ddd;padding:.6em 0}
.row img{min-height:60px;min-width:200px;background:#eee}.scores td{font-size:13px}
"""

LAZY = """
const load = img => { if (img.dataset.src) { img.src = img.dataset.src; delete img.dataset.src; } };
const images = document.querySelectorAll('img[data-src]');
if ('IntersectionObserver' in window) {
  const seen = new IntersectionObserver(entries => entries.forEach(e => {
    if (e.isIntersecting) { load(e.target); seen.unobserve(e.target); } }), {rootMargin: '600px'});
  images.forEach(img => seen.observe(img));
} else { images.forEach(load); }
"""


def write_html_report(path: Path, title: str, scores: dict, rows: list[dict], confmat: np.ndarray,
                      names: Sequence[str], gallery: Gallery, metric: str, prefix: str) -> Path:  # fmt: skip
    """Write the page; the gallery sorted worst first by ``metric`` (its direction from its name)."""
    higher_is_better = metric_mode(metric) == "max"
    keyed = [(image_score(row, metric), row) for row in rows]
    # worst first; images where the score is undefined (NaN) go last
    keyed.sort(key=lambda kr: (math.isnan(kr[0]), kr[0] if higher_is_better else -kr[0]))
    summary = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in scores.items())
    columns = [c for c in rows[0] if c != "image"] if rows else []
    gallery_rows = []
    for rank, (value, row) in enumerate(keyed, start=1):
        name = str(row["image"])
        strip = gallery.strips.get(name)
        picture = ""
        if strip is not None:
            data = base64.b64encode(strip).decode("ascii")
            picture = f'<img alt="{html.escape(name)}" data-src="data:image/jpeg;base64,{data}">'
            if name in gallery.links:
                picture = f'<a href="{html.escape(gallery.links[name])}">{picture}</a>'
        cells = "".join(f"<tr><th>{html.escape(c)}</th><td>{_fmt(row[c])}</td></tr>" for c in columns)
        gallery_rows.append(
            f'<div class="row" id="image-{rank}"><div><b>{rank}. {html.escape(name)}</b><br>'
            f"{html.escape(metric.rsplit('/', 1)[-1])} {_fmt(value)}<br>{picture}</div>"
            f'<table class="scores">{cells}</table></div>'
        )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<h2>Summary ({len(rows)} images, pooled over all pixels)</h2>
<table class="summary">{summary}</table>
<h2>Per class</h2>
{_bars(names, scores, prefix)}
<h2>Confusion matrix</h2>
{_confusion(confmat, names)}
<h2>Images, worst first by {html.escape(metric)} ({"higher" if higher_is_better else "lower"} is better)</h2>
<p>Each row: image | ground truth | prediction | errors. Click a picture for the full-size output where one
was written (<code>save_predictions=true</code>).</p>
{_legend(names, gallery.colours)}
<div id="gallery">{"".join(gallery_rows)}</div>
<script>{LAZY}</script>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path
