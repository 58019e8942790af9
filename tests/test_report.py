"""The evaluation report and the run's pictures: worst images first, offline, legible without the code."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
from PIL import Image

from segkit.inference.report import Gallery, write_html_report
from segkit.visualize import error_map, overlay, palette, row_shares, save_overlay_with_legend

NAMES = ["background", "cell"]


def _gallery_order(page: str) -> list[str]:
    return re.findall(r'<div class="row" id="image-\d+"><div><b>\d+\. ([^<]+)</b>', page)


def _report(tmp_path: Path, rows: list[dict], metric: str) -> str:
    gallery = Gallery(palette(2), 255)
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    for row in rows:
        gallery.add(row["image"], image, np.zeros((8, 8), np.uint8), np.ones((8, 8), np.uint8))
    path = write_html_report(tmp_path / "report.html", "t", {"val/miou": 0.5}, rows, np.eye(2) * 10, NAMES,
                             gallery, metric, "val")  # fmt: skip
    return path.read_text()


def test_gallery_is_sorted_worst_first_in_the_metric_s_direction(tmp_path: Path) -> None:
    rows = [{"image": n, "miou": m, "pixel_error": e} for n, m, e in
            [("a", 0.9, 0.30), ("b", 0.2, 0.01), ("c", 0.5, float("nan")), ("d", float("nan"), 0.10)]]  # fmt: skip
    assert _gallery_order(_report(tmp_path, rows, "val/miou")) == ["b", "c", "a", "d"]  # higher is better
    assert _gallery_order(_report(tmp_path, rows, "val/pixel_error")) == ["a", "d", "b", "c"]  # lower is better
    # a metric with no per-image column (the pooled mIoU's name differs) falls back to the image's mIoU
    assert _gallery_order(_report(tmp_path, rows, "val/acc")) == ["b", "c", "a", "d"]


def test_report_is_self_contained_and_loads_thumbnails_lazily(tmp_path: Path) -> None:
    rows = [{"image": f"img{i}", "miou": i / 10} for i in range(5)]
    page = _report(tmp_path, rows, "val/miou")
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from the network
    assert page.count('data-src="data:image/jpeg;base64,') == 5 and ' src="data:' not in page
    assert "IntersectionObserver" in page
    assert "100.0%" in page  # the confusion matrix, row-normalised


def test_overlay_colours_read_as_the_legend_whatever_the_image_colour() -> None:
    blue = np.zeros((4, 4, 3), dtype=np.float32)
    blue[..., 2] = 1.0
    mask = np.full((4, 4), 1)
    red = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=np.float32)
    out = overlay(blue, mask, 2, colours=red)[0, 0]
    assert out[0] > out[2]  # a red class over a blue image is red, not purple
    np.testing.assert_allclose(out[1], out[2])  # the image under the colour is grey


def test_error_map_marks_wrong_pixels_red_and_ignored_yellow() -> None:
    image = np.full((2, 3, 3), 0.5, dtype=np.float32)
    target = np.array([[0, 1, 255], [1, 1, 0]])
    pred = np.array([[0, 0, 1], [1, 1, 0]])
    out = error_map(image, target, pred)
    assert out[0, 1].tolist() == [1.0, 0.0, 0.0]
    np.testing.assert_allclose(out[0, 2], [1.0, 0.85, 0.0])  # ignored, not counted as an error
    assert out[1, 0, 0] == out[1, 0, 1] == out[1, 0, 2] < 0.5  # right pixels: dimmed grey


def test_confusion_shares_are_per_true_class() -> None:
    shares = row_shares(np.array([[90, 10], [1, 3], [0, 0]]))
    np.testing.assert_allclose(shares, [[0.9, 0.1], [0.25, 0.75], [0.0, 0.0]])


def test_small_images_are_enlarged_in_overlays(tmp_path: Path) -> None:
    image = np.zeros((64, 48, 3), dtype=np.uint8)
    mask = np.zeros((64, 48), dtype=np.uint8)
    mask[:8, :8] = 1
    path = save_overlay_with_legend(image, mask, NAMES, [[0, 0, 0], [255, 0, 0]], tmp_path / "o.png")
    picture = np.asarray(Image.open(path).convert("RGB"))
    assert picture.shape[1] == 48 * 6  # the shorter side enlarged to 256 px or more, by a whole factor
    assert picture[:48, :48, 0].min() > 100 and picture[48, 48, 0] == 0  # the 8x8 class block, 6x larger


def test_eval_report_on_a_trained_run(evaluated_run) -> None:
    _, out = evaluated_run  # python -m segkit.eval ... report=true save_predictions=true
    page = (out / "report.html").read_text()
    rows = {r["image"]: float(r["miou"]) for r in csv.DictReader(open(out / "per_image.csv"))}
    order = _gallery_order(page)
    assert sorted(order) == sorted(rows)  # every image once
    assert [rows[n] for n in order] == sorted(rows.values())  # quickstart optimises val/miou: lowest first
    for name in order:  # each links to its full-size overlay, which exists
        assert f'href="predictions/{name}_overlay.png"' in page and (out / "predictions" / f"{name}.png").is_file()
    assert "Report:" in (out / "eval.log").read_text()
