"""The benchmark scripts keep working: the README's figures come from them, and one of them
(``train_loop.py``'s bare step) once broke silently when the scheduler it called learnt to need a run length.

The default suite imports every script and asks it for ``--help`` (a renamed segkit function or a broken parser
fails here); the slow suite runs the cheap ones for a few seconds, as the README documents them, and reads
their figures back."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if 'if __name__ == "__main__"' in p.read_text())


def run_script(name: str, *args: str, cwd: Path, timeout: int = 600) -> str:
    """``python benchmarks/<name> <args>`` in ``cwd`` (its ``outputs/`` land there); the environment is this
    process's, where conftest.py set NO_ALBUMENTATIONS_UPDATE."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert done.returncode == 0, f"{name} {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_there_are_benchmark_scripts() -> None:
    assert {"train_loop.py", "cpu_precision.py", "unseen_folder.py", "nnunet_vs_segkit.py"} <= {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_benchmark_script_imports_and_explains_itself(
    script: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(sys, "path", [str(BENCHMARKS), *sys.path])  # helpers are siblings; some scripts
    # also prepend their folder at import: the copy keeps that out of the other tests
    monkeypatch.setattr(sys, "argv", [script.name, "--help"])
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exited:
        module.main()
    assert exited.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.slow
def test_train_loop_benchmark_runs(tmp_path: Path) -> None:
    out = run_script("train_loop.py", "--seconds", "5", "+experiment=quickstart", cwd=tmp_path)
    bare = re.search(r"bare step: ([\d.]+) images/s", out)
    trained = re.search(r"segkit\.train: (\d+) steps in \d+ s = ([\d.]+) images/s", out)
    assert bare and float(bare.group(1)) > 0, out
    assert trained and int(trained.group(1)) > 0 and float(trained.group(2)) > 0, out


@pytest.mark.slow
def test_cpu_precision_benchmark_runs(tmp_path: Path) -> None:
    from segkit.precision import cpu_precision

    out = run_script("cpu_precision.py", "--steps", "1", cwd=tmp_path)
    assert len(re.findall(r"\d+ ms", out)) >= 9, out  # three networks, three settings each
    assert cpu_precision() in out, out


@pytest.mark.slow
def test_unseen_folder_benchmark_runs(tmp_path: Path) -> None:
    """The held-out stand-in end to end: write the folder, plan, train for a few seconds, score through eval."""
    out = run_script("unseen_folder.py", "--folder", str(tmp_path / "nuclei"), "--sides", "auto", "--minutes",
                     "0.5", "--seeds", "42", cwd=tmp_path)  # fmt: skip
    row = re.search(r"\| auto \| ([\d.]+) ± [\d.]+ \| ([\d.]+) ± [\d.]+ \| (\d+) \|", out)
    assert row, out
    pooled, per_image, steps = float(row.group(1)), float(row.group(2)), int(row.group(3))
    assert 0 <= pooled <= 1 and 0 <= per_image <= 1 and steps > 0, out


@pytest.mark.slow  # runs the script, as the other slow ones here do (~15 s, mostly torch's import)
def test_width_step_times_prints_the_bound_beside_each_doubling(tmp_path: Path) -> None:
    out = run_script("width_step_times.py", "--patch", "32", "--depth", "2", "--widths", "4", "8", "16", cwd=tmp_path)
    row = re.search(r"^\s+16\s+\d+ \s+(\d+)\s+([\d.]+)$", out, re.MULTILINE)
    assert row and int(row.group(1)) > 0 and float(row.group(2)) > 0, out
    assert re.search(r"^\s+8\s+\d+\s*$", out, re.MULTILINE), out  # no bound without a quarter-width reading
