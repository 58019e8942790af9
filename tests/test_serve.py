"""``segkit.serve``: a real LitServe server on loopback answers what ``Predictor`` answers, refuses bad input
with 4xx and keeps serving; its page and ``report.html`` work in a real browser (headless Chromium).

The browser tests are marked ``browser`` and run in their own CI step (``pytest -m browser``), after
``.ci/run`` installs Debian's ``chromium`` and ``chromium-driver``."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkit.inference import Predictor

pytest.importorskip("litserve", reason="segkit.serve needs the serve extra (pip install -e '.[serve]')")

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, fields: dict[str, str], image: bytes | None, filename: str = "x.png") -> tuple[int, bytes, str]:
    """A multipart POST with the standard library: (status, body, content type)."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]  # fmt: skip
    if image is not None:
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n")  # fmt: skip
        parts.append(head.encode() + image + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read(), response.headers.get("content-type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get("content-type", "")


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _images(count: int, shape: tuple[int, int] = (72, 96)) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.random((*shape, 3)) * 255).astype(np.uint8) for _ in range(count)]


def start_server(run: Path, port: int, *overrides: str) -> subprocess.Popen:
    """``python -m segkit.serve`` in a session of its own (its processes form one group), once it is healthy.

    SIGINT is reset to its default there, as a terminal has it: a shell ignores it for a job started in the
    background (CI under ``nohup … &``), and the server would inherit that and ignore Ctrl+C.
    """
    command = [sys.executable, "-m", "segkit.serve", f"ckpt={run}", f"port={port}", "device=cpu", *overrides]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                               env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})  # fmt: skip
    deadline = time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                if response.status == 200:
                    return process
        except (urllib.error.URLError, ConnectionError):
            pass
        if process.poll() is not None or time.time() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"the server did not start:\n{process.stdout.read().decode()[-3000:]}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def server(trained_run: Path, tmp_path_factory) -> Iterator[dict]:
    """``python -m segkit.serve`` on a free loopback port (2-request batches), stopped at the end."""
    port, out = _free_port(), tmp_path_factory.mktemp("serve")
    process = start_server(trained_run, port, "max_pixels=200000", "max_batch_size=2", "batch_timeout=0.05",
                           "tile=[64,64]", f"output={out}")  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    yield {"url": url, "run": trained_run, "output": out}
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def reference(trained_run: Path) -> Predictor:
    """The prediction path the server must reproduce."""
    return Predictor(trained_run, tile=[64, 64], device="cpu")


def test_predict_answers_the_class_index_png_the_predictor_gives(server: dict, reference: Predictor) -> None:
    image = _images(1)[0]
    status, body, kind = _post(f"{server['url']}/predict", {}, _png(image))
    assert status == 200 and kind == "image/png"
    mask = Image.open(io.BytesIO(body))
    assert mask.mode == "P" and mask.size == (96, 72)  # the input's size, palette PNG
    np.testing.assert_array_equal(np.asarray(mask), reference.predict(image))


def test_json_answer_counts_pixels_and_carries_the_overlay(server: dict, reference: Predictor) -> None:
    image = _images(2)[1]
    status, body, _ = _post(f"{server['url']}/predict", {"format": "json", "overlay": "true", "mask": "true"},
                            _png(image))  # fmt: skip
    assert status == 200
    answer = json.loads(body)
    expected = np.bincount(reference.predict(image).ravel(), minlength=4)
    assert [answer["pixels"][name] for name in reference.class_names] == expected.tolist()
    assert (answer["height"], answer["width"]) == (72, 96)
    overlay = Image.open(io.BytesIO(base64.b64decode(answer["overlay_png"])))
    assert overlay.size == (96, 72) and overlay.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask_png"])))),
                                  reference.predict(image))  # fmt: skip


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(server: dict, reference: Predictor) -> None:
    images = _images(6) + _images(2, shape=(40, 56))  # two sizes in flight at once
    with ThreadPoolExecutor(max_workers=len(images)) as pool:
        answers = list(pool.map(lambda im: _post(f"{server['url']}/predict", {}, _png(im)), images))
    for image, (status, body, _) in zip(images, answers, strict=True):
        assert status == 200
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body))), reference.predict(image))


def test_bad_requests_get_4xx_with_a_reason_and_the_server_keeps_serving(server: dict) -> None:
    url = f"{server['url']}/predict"
    cases = {
        "no file": (_post(url, {"format": "json"}, None), 400, "field named 'image'"),
        "empty file": (_post(url, {}, b""), 400, "empty"),
        "not an image": (_post(url, {}, b"%PDF-1.4 not a picture", "notes.pdf"), 415, "notes.pdf"),
        "too large": (_post(url, {}, _png(np.zeros((500, 500, 3), np.uint8)), "big.png"), 413, "max_pixels"),
        "five channels": (_post(url, {}, _tiff(np.zeros((32, 32, 5), np.uint8)), "x.tif"), 415, "5-channel"),
        # a misspelt field or value was ignored: a PNG answered a client waiting for JSON
        "format=josn": (_post(url, {"format": "josn"}, _png(_images(1)[0])), 400, "format='josn'"),
        "overlay=ture": (_post(url, {"format": "json", "overlay": "ture"}, _png(_images(1)[0])), 400, "overlay='ture'"),
        "overlay, no json": (_post(url, {"overlay": "true"}, _png(_images(1)[0])), 400, "send format=json too"),
        "a server setting": (_post(url, {"tta": "flips"}, _png(_images(1)[0])), 400, "unknown form field(s) 'tta'"),
    }
    for what, ((status, body, _), expected, words) in cases.items():
        assert status == expected, (what, body)
        assert words in json.loads(body)["detail"], (what, body)
    raw = urllib.request.Request(url, data=_png(_images(1)[0]), headers={"Content-Type": "image/png"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(raw, timeout=30)
    assert err.value.code == 415 and b"multipart form" in err.value.read()
    assert _post(url, {}, _png(_images(1)[0]))[0] == 200  # still serving
    assert urllib.request.urlopen(f"{server['url']}/health", timeout=10).status == 200
    assert sorted(p.name for p in server["output"].iterdir()) == ["serve.log"]  # no upload was written


def _tiff(array: np.ndarray) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, photometric="minisblack", planarconfig="contig")  # one page, 5 samples
    return buffer.getvalue()


def test_info_describes_the_model_and_the_page_is_served(server: dict, reference: Predictor) -> None:
    info = json.loads(urllib.request.urlopen(f"{server['url']}/info", timeout=10).read())["model"]
    assert info["classes"] == reference.class_names and info["in_channels"] == 3
    assert info["palette"] == reference.model.metadata["palette"] and info["tile"] == [64, 64]
    page = urllib.request.urlopen(f"{server['url']}/", timeout=10).read().decode()
    assert '<input type="file"' in page and "fetch('predict'" in page


def _chrome():  # noqa: ANN202
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        why = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("SEGKIT_REQUIRE_BROWSER"):  # CI's browser step: a missing browser is a failure
            pytest.fail(why)
        pytest.skip(why)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1600"):
        options.add_argument(arg)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)), options=options)


def test_info_lists_every_model_of_an_ensemble(trained_run: Path) -> None:
    """``/info`` named the first model of an ensemble alone as its source."""
    from omegaconf import OmegaConf

    from segkit.inference import Predictor
    from segkit.serve import model_info

    info = model_info(Predictor([trained_run, trained_run], device="cpu"),
                      OmegaConf.create({"max_pixels": 100, "max_batch_size": 2}))  # fmt: skip
    assert len(info["members"]) == 2 and info["description"].startswith("ensemble of 2 models")


def test_only_the_first_sigterm_interrupts_the_server() -> None:
    """systemd signals every process of a unit (and ``timeout`` forwards its own): a second SIGTERM raised
    KeyboardInterrupt inside LitServe's graceful shutdown, which ended in a traceback."""
    import signal

    from segkit.serve import stop_on_sigterm

    before = signal.getsignal(signal.SIGTERM)
    try:
        stop_on_sigterm()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
        try:
            signal.raise_signal(signal.SIGTERM)  # the shutdown under way goes on
        except KeyboardInterrupt:
            pytest.fail("a second SIGTERM interrupted the shutdown again")
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.parametrize(
    "stop",
    [
        pytest.param("SIGTERM to the main process", marks=pytest.mark.slow),  # kill, systemd, docker stop (25 s)
        pytest.param("SIGINT to the group", marks=pytest.mark.slow),  # Ctrl+C in a terminal
    ],
)
def test_a_signal_stops_every_server_process_quietly_and_frees_the_port(trained_run: Path, stop: str) -> None:
    """Python's default SIGTERM ended the main process alone and left LitServe's HTTP and inference processes
    serving on the port; Ctrl+C ended the inference worker with a traceback. Both now stop the whole server,
    exit 0 and print no traceback."""
    from segkit.serve import check_port_free

    port = _free_port()
    process = start_server(trained_run, port)
    if stop.startswith("SIGTERM"):
        os.kill(process.pid, signal.SIGTERM)
    else:
        os.killpg(process.pid, signal.SIGINT)
    try:
        returncode = process.wait(timeout=60)
        deadline = time.time() + 20
        while _group_alive(process.pid) and time.time() < deadline:
            time.sleep(0.5)
        assert not _group_alive(process.pid), "server processes outlived the main one"
    finally:
        if _group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
    output = process.stdout.read().decode()
    assert returncode == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "Stopped: every worker process has ended" in output
    check_port_free("127.0.0.1", port)  # nothing listens there: a new server binds it (TIME_WAIT aside, as uvicorn)


def test_a_port_in_use_is_refused_before_the_model_loads() -> None:
    """uvicorn answered a taken port with "[Errno 98] Address already in use" after segkit had logged that it
    was serving there; the port is now tried first, and the message names it and what to do."""
    from segkit.serve import check_port_free

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(
            ValueError, match=rf"port={port}: 127.0.0.1:{port} cannot be bound \(Address already in use\)"
        ):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)  # closed: free again


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` other than a zombie is left."""
    found = subprocess.run(["ps", "-o", "stat=", "-g", str(pgid)], capture_output=True, text=True).stdout.split()
    return any(not state.startswith("Z") for state in found)


@pytest.mark.browser
def test_the_page_segments_an_uploaded_image_in_a_real_browser(server: dict, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    picture = tmp_path / "upload.png"
    Image.fromarray(_images(1, shape=(80, 112))[0]).save(picture)
    driver = _chrome()
    try:
        driver.get(server["url"] + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: "square" in d.find_element(By.ID, "legend").get_attribute("textContent"))  # /info read
        driver.find_element(By.ID, "file").send_keys(str(picture))
        wait.until(lambda d: d.execute_script("const i = document.getElementById('overlay'); "
                                              "return i.complete && i.naturalWidth > 0;"))  # fmt: skip
        size = driver.execute_script(
            "const i = document.getElementById('overlay'); return [i.naturalWidth, i.naturalHeight];"
        )
        assert size == [112, 80]
        legend = driver.find_element(By.ID, "legend").text
        assert all(name in legend for name in ("background", "disc", "square", "triangle"))
        rows = driver.find_elements(By.CSS_SELECTOR, "#areas tbody tr")
        assert len(rows) == 4 and "done in" in driver.find_element(By.ID, "status").text
        assert driver.find_element(By.ID, "download").get_attribute("href").startswith("data:image/png;base64,")
        driver.save_screenshot(str(tmp_path / "page.png"))
    finally:
        driver.quit()
    assert (tmp_path / "page.png").stat().st_size > 10_000


@pytest.mark.browser
def test_report_html_opens_offline_worst_first_in_a_real_browser(evaluated_run, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, out = evaluated_run  # python -m segkit.eval ... report=true
    driver = _chrome()
    try:
        driver.get((out / "report.html").as_uri())
        rows = driver.find_elements(By.CSS_SELECTOR, "#gallery .row")
        assert len(rows) == 4
        scores = [float(r.text.split("\n")[1].split()[-1]) for r in rows]  # "miou 0.1234" under each name
        assert scores == sorted(scores)  # worst first
        loaded = "return [...document.querySelectorAll('#gallery img')].map(i => i.complete && i.naturalWidth > 0);"
        assert driver.execute_script(loaded)[0] and not driver.execute_script(loaded)[-1]  # the last: not yet
        for image in driver.find_elements(By.CSS_SELECTOR, "#gallery img"):  # scrolled to, each one loads
            driver.execute_script("arguments[0].scrollIntoView();", image)
        WebDriverWait(driver, 30).until(lambda d: all(d.execute_script(loaded)))
        assert "Confusion matrix" in driver.page_source
        driver.save_screenshot(str(tmp_path / "report.png"))
    finally:
        driver.quit()
    assert (tmp_path / "report.png").stat().st_size > 10_000


class _Upload:
    """What Starlette's form parser hands over for a file field: a name and a file object."""

    def __init__(self, data: bytes, filename: str) -> None:
        self.filename, self.file = filename, io.BytesIO(data)

    def read(self) -> bytes:
        return self.file.read()


def test_uploads_are_kept_only_where_configured(trained_run: Path, tmp_path: Path) -> None:
    from segkit.inference.service import SegmentationAPI

    image = _png(_images(1)[0])
    runner_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)  # a terminal's, whatever CI's is
    try:
        for keep in (None, tmp_path / "uploads"):
            api = SegmentationAPI(str(trained_run), {"tile": [64, 64]}, max_pixels=10_000, save_uploads=keep)
            api.setup("cpu")
            decoded = api.decode_request({"image": _Upload(image, "cells.png"), "format": "JSON", "overlay": "1"})
            assert decoded["image"].shape == (72, 96, 3) and decoded["format"] == "json" and decoded["overlay"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # in-process: Ctrl+C still works
    finally:
        signal.signal(signal.SIGINT, runner_sigint)
    (kept,) = (tmp_path / "uploads").iterdir()
    assert kept.name.endswith("_cells.png") and kept.read_bytes() == image
    assert sorted(p.name for p in tmp_path.iterdir()) == ["uploads"]  # the first API wrote nothing
