"""Serving: ``python -m segkit.serve ckpt=<run | .ckpt | model dir> [host=127.0.0.1 port=8000 device=auto]``.

An HTTP service on LitServe (:mod:`segkit.inference.service`): ``POST /predict`` (the class-index PNG, or JSON
with pixel counts and the overlay), ``GET /`` a page to drop an image on and see the overlay with its legend
and class areas, ``GET /info`` (classes, palette, channels, tiles), ``GET /health``. It binds to 127.0.0.1
unless ``host=`` says otherwise; put it behind a reverse proxy (TLS, authentication) to open it to others.
"""

from __future__ import annotations

# ruff: noqa: E402 -- a command line is answered (--help, a typo) before the imports it runs with
from segkit.cli import answer_first

if __name__ == "__main__":  # ~2 s instead of the 10-18 s torch and Lightning take to import
    answer_first("serve", "segkit.serve")

import logging
import os
import signal
import socket
from importlib import resources

import hydra
from omegaconf import DictConfig

from segkit.cli import clear_errors
from segkit.inference.predictor import Predictor, config_ckpt, config_options

log = logging.getLogger(__name__)

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def accelerator(device: str) -> str:
    """LitServe's accelerator for segkit's ``device=`` (LitServe starts one worker per device it finds)."""
    if device in ("auto", "cpu", "cuda"):
        return device
    raise ValueError(f"device={device!r}: serve takes auto, cpu or cuda (choose GPUs with CUDA_VISIBLE_DEVICES)")


def model_info(predictor: Predictor, cfg: DictConfig) -> dict:
    """What ``GET /info`` says about the model (JSON)."""
    meta = predictor.model.metadata
    return {
        "source": str(predictor.model.source),
        "members": [str(member.source) for member in predictor.members],  # an ensemble's models, else the one
        "classes": predictor.class_names,
        "palette": meta["palette"],
        "in_channels": predictor.in_channels,
        "color_mode": predictor.color_mode,
        "tile": list(predictor.window.tile),
        "description": predictor.describe(),
        "max_pixels": int(cfg.max_pixels),
        "max_batch_size": int(cfg.max_batch_size),
    }


def build_server(cfg: DictConfig):  # noqa: ANN201 (litserve.LitServer: imported here, an optional extra)
    """The LitServer for ``cfg``: the API, the page at ``/`` and the model's ``/info``."""
    import litserve as ls
    from fastapi.responses import HTMLResponse

    from segkit.inference.service import SegmentationAPI

    options, ckpt = config_options(cfg), config_ckpt(cfg)
    info = model_info(Predictor(ckpt, device="cpu", **options), cfg)  # read once here for /info; workers load their own
    api = SegmentationAPI(ckpt, options, cfg.max_pixels, cfg.get("save_uploads"), int(cfg.max_batch_size),
                          float(cfg.batch_timeout))  # fmt: skip
    server = ls.LitServer(api, accelerator=accelerator(str(cfg.device)), workers_per_device=int(cfg.workers_per_device),
                          timeout=float(cfg.timeout), model_metadata=info)  # fmt: skip
    page = resources.files("segkit.inference").joinpath("page.html").read_text(encoding="utf-8")
    server.app.router.routes = [r for r in server.app.router.routes if getattr(r, "path", None) != "/"]
    server.app.add_api_route("/", lambda: HTMLResponse(page), methods=["GET"], include_in_schema=False)
    server.app.middleware("http")(require_form)
    return server


async def require_form(request, call_next):  # noqa: ANN001, ANN201 (a Starlette HTTP middleware)
    """Answer 415 to a ``POST /predict`` that is not a form: LitServe would try to read it as JSON and
    answer 500 (an empty body, a raw image)."""
    from fastapi.responses import JSONResponse

    kind = request.headers.get("content-type", "")
    if request.method == "POST" and request.url.path == "/predict" and not kind.startswith(FORM_TYPES):
        detail = (f"POST /predict takes a multipart form with the image in the field 'image' "
                  f"(curl -F image=@file.png ...), not {kind or 'an empty body'}")  # fmt: skip
        return JSONResponse({"detail": detail}, status_code=415)
    return await call_next(request)


def stop_on_sigterm() -> None:
    """Make SIGTERM raise, in this process, what Ctrl+C raises, so that LitServe's shutdown stops its workers.

    LitServe's HTTP processes are forked from this one and inherit the handler; there SIGTERM keeps its
    default (the process ends quietly when LitServe terminates it, as it did before).

    Only the first SIGTERM interrupts: systemd signals every process of a unit, and ``timeout`` or a
    supervisor may signal again, and a second KeyboardInterrupt broke LitServe's shutdown with a traceback.
    """
    main = os.getpid()
    stopping = False

    def interrupt(signum: int, frame: object) -> None:
        nonlocal stopping
        if os.getpid() == main:
            if stopping:
                return
            stopping = True
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, interrupt)


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another process listens on, before the model loads: uvicorn would log only "[Errno 98]
    Address already in use" after segkit had announced that it was serving there. The probe binds as uvicorn
    does (``SO_REUSEADDR``), so a port left in TIME_WAIT by a stopped server still counts as free."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise ValueError(
                f"port={port}: {host}:{port} cannot be bound ({err.strerror}); another server (an earlier "
                f"segkit.serve?) may hold it: `ss -ltnp | grep :{port}` names it, or choose another port=..."
            ) from err


def run(cfg: DictConfig) -> None:
    """Serve until interrupted: Ctrl+C, or SIGTERM (``kill``, systemd, ``docker stop``, Kubernetes).

    LitServe stops its HTTP and inference processes only on ``KeyboardInterrupt``; Python's default SIGTERM
    ends the main process at once and would leave them orphaned, still holding the port.
    """
    check_port_free(str(cfg.host), int(cfg.port))
    server = build_server(cfg)
    stop_on_sigterm()
    log.info("Serving on http://%s:%d (page at /, POST /predict, GET /info, GET /health)", cfg.host, cfg.port)
    server.run(host=cfg.host, port=int(cfg.port), generate_client_file=False, log_level="warning")
    log.info("Stopped: every worker process has ended")


@hydra.main(version_base="1.3", config_path="conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    """Command-line entry (conf/serve.yaml)."""
    clear_errors(run)(cfg)


if __name__ == "__main__":
    main()
