"""The HTTP service behind ``python -m segkit.serve``: a LitServe API around :class:`Predictor`.

LitServe (Lightning's serving library) runs the model in worker processes, one per device, and gathers
concurrent requests into batches. Each request goes through the same :class:`Predictor` as
``segkit.predict`` (reading, tiles, precision, TTA), so the service answers what the command would write.

``POST /predict`` takes a multipart form: ``image`` (the file) and optionally ``format=json``, ``overlay=true``,
``mask=true``. It answers the class-index PNG (palette PNG, the input's size) by default, or JSON with the
per-class pixel counts (and, when asked, the overlay and mask PNGs in base64). Bad input (no file, empty file,
not an image, unsupported channels, more than ``max_pixels``, a field or value it does not know) is a 4xx
with a message saying what was wrong; the worker carries on. Uploads stay in memory unless ``save_uploads``
names a folder.
"""

from __future__ import annotations

import base64
import io
import logging
import multiprocessing
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np
from fastapi import HTTPException, Response
from PIL import Image

from segkit.inference.files import png_bytes
from segkit.inference.predictor import Predictor, class_indices
from segkit.visualize import overlay

log = logging.getLogger(__name__)

TRUE, FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")
FIELDS = ("image", "format", "overlay", "mask")  # what a request may send; the rest is the server's settings


def overlay_png(image: np.ndarray, mask: np.ndarray, palette: list[list[int]]) -> bytes:
    """The class colours over the image, at the image's size (the page draws the legend itself)."""
    rgb = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
    rgb = np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb[..., :3]
    out = overlay(rgb, mask, len(palette), colours=np.asarray(palette, dtype=np.float32) / 255.0)
    return png_bytes((out * 255).round().astype(np.uint8))


class SegmentationAPI(ls.LitAPI):
    """One model served at ``/predict``.

    Args:
        ckpt: what :class:`Predictor` accepts (run directory, ``.ckpt``, model folder, list or multirun).
        predictor_options: the other :class:`Predictor` arguments (tile, overlap, tta, precision,
            tile_batch_size); the device is the worker's.
        max_pixels: larger uploads are refused with 413 before they are decoded.
        save_uploads: a folder to keep each upload in (``None``: nothing the client sends touches the disk).
        max_batch_size, batch_timeout: LitServe's server-side batching.
    """

    def __init__(self, ckpt: Any, predictor_options: dict, max_pixels: int, save_uploads: str | None = None,
                 max_batch_size: int = 1, batch_timeout: float = 0.0) -> None:  # fmt: skip
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.ckpt, self.options, self.max_pixels = ckpt, dict(predictor_options), int(max_pixels)
        self.save_uploads = Path(save_uploads) if save_uploads else None

    def setup(self, device: str) -> None:
        """Load the model on this worker's device.

        A worker process ignores Ctrl+C: the terminal sends it to every process of the group, and the main
        process stops the workers itself; left on, it ends a worker mid-loop with a traceback in the server's
        output. Used in-process (no parent process), the API leaves the caller's Ctrl+C alone.
        """
        if multiprocessing.parent_process() is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.predictor = Predictor(self.ckpt, device=device, **self.options)
        self.palette = self.predictor.model.metadata["palette"]
        log.info("Serving %s: %s", self.predictor.model.source, self.predictor.describe())

    def decode_request(self, request):  # noqa: ANN001, ANN201 (no annotation: LitServe then passes the form)
        """Form -> ``{"image": (H, W, C) array, "format", "overlay", "mask"}``; 4xx for bad input."""
        upload = request.get("image") if hasattr(request, "get") else None
        if upload is None or not hasattr(upload, "read"):
            raise HTTPException(400, "send the image as a multipart form field named 'image' (curl -F image=@file.png)")
        name = Path(upload.filename or "upload").name
        data = upload.file.read()
        if not data:
            raise HTTPException(400, f"{name}: the uploaded file is empty")
        pixels = _header_pixels(data)
        if pixels is not None and pixels > self.max_pixels:
            raise HTTPException(413, f"{name}: {pixels} pixels, more than this server's max_pixels={self.max_pixels}")
        try:
            image = self.predictor.decode(data, name)
        except ValueError as err:
            raise HTTPException(415, str(err)) from None
        if image.shape[0] * image.shape[1] > self.max_pixels:
            raise HTTPException(413, f"{name}: {image.shape[0] * image.shape[1]} pixels, more than max_pixels")
        options = request_options(request)
        if self.save_uploads is not None:
            self.save_uploads.mkdir(parents=True, exist_ok=True)
            (self.save_uploads / f"{time.strftime('%Y%m%d-%H%M%S')}_{uuid.uuid4().hex[:8]}_{name}").write_bytes(data)
        return {"image": image, **options}

    def batch(self, inputs: list[dict]) -> list[dict]:
        """Requests stay a list: images of one size are stacked by :meth:`Predictor.logits_many`."""
        return inputs

    def predict(self, x: dict | list[dict]) -> dict | list[dict]:
        """Class indices for one request or a batch of them (tiles of same-size images share forward passes)."""
        items = x if isinstance(x, list) else [x]
        try:
            logits = self.predictor.logits_many([item["image"] for item in items])
        except ValueError as err:  # e.g. an image smaller than a valid-padding network's smallest input
            raise HTTPException(422, str(err)) from None
        out = [{**item, "classes": class_indices(lg)} for item, lg in zip(items, logits, strict=True)]
        return out if isinstance(x, list) else out[0]

    def unbatch(self, output: list[dict]) -> list[dict]:
        return output

    def encode_response(self, output: dict) -> Any:
        """The class-index PNG, or JSON (``format=json``) with pixel counts and the PNGs asked for."""
        mask = output["classes"]
        if output["format"] != "json":
            return Response(content=png_bytes(mask, self.palette), media_type="image/png")
        names = self.predictor.class_names
        counts = np.bincount(mask.ravel(), minlength=len(names))[: len(names)]
        answer: dict[str, Any] = {
            "height": int(mask.shape[0]),
            "width": int(mask.shape[1]),
            "classes": names,
            "pixels": {name: int(c) for name, c in zip(names, counts, strict=True)},
            "share": {name: float(c) / mask.size for name, c in zip(names, counts, strict=True)},
        }
        if output["overlay"]:
            answer["overlay_png"] = base64.b64encode(overlay_png(output["image"], mask, self.palette)).decode()
        if output["mask"]:
            answer["mask_png"] = base64.b64encode(png_bytes(mask, self.palette)).decode()
        return answer


def request_options(request) -> dict:  # noqa: ANN001 (a form: Starlette's FormData or a dict)
    """``format``, ``overlay`` and ``mask`` of a request, checked: a misspelt field or value (``format=josn``,
    ``overlay=ture``, ``tta=flips``) was ignored and answered as if it had not been sent, a PNG where the
    client waited for JSON. Each is now a 400 that names it."""
    unknown = sorted(set(request.keys()) - set(FIELDS))
    if unknown:
        raise HTTPException(400, f"unknown form field(s) {', '.join(map(repr, unknown))}: a request sends "
                            f"{', '.join(FIELDS)}; tiles, overlap, tta and precision are the server's settings "
                            "(python -m segkit.serve tta=...)")  # fmt: skip
    fmt = str(request.get("format") or "png").lower()
    if fmt not in ("png", "json"):
        raise HTTPException(400, f"format={fmt!r}: the answer is png (the class-index mask) or json")
    flags = {}
    for key in ("overlay", "mask"):
        value = str(request.get(key) or "").lower()
        if value not in TRUE + FALSE:
            raise HTTPException(400, f"{key}={value!r}: give true or false")
        flags[key] = value in TRUE
        if flags[key] and fmt != "json":
            raise HTTPException(400, f"{key}=true adds a base64 PNG to a JSON answer: send format=json too")
    return {"format": fmt, **flags}


def _header_pixels(data: bytes) -> int | None:
    """The pixel count from the image's header (no decoding), or ``None`` when PIL cannot tell."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError:  # PIL refuses to open more than ~179 M pixels
        return 2**62
    except Exception:  # not an image PIL knows (or a float TIFF): the decoder gives the clear error
        return None
    return width * height
