"""The command line as a new user meets it: --help, and a run piped to a file (CI, SLURM, nohup)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.run([sys.executable, "-m", "segkit.train", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


VERBS = ("train", "predict", "eval", "export", "inspect", "plan", "crossval", "serve")

# Each ``python -m segkit.<verb> --help`` as ``python -m`` runs it (runpy, ``__main__``), all in one child
# process: a fresh interpreter spends ~10 s importing torch and Lightning, once here instead of once a verb.
HELP_SCRIPT = """
import contextlib, io, json, runpy, sys
helps = {}
for verb in sys.argv[1:]:
    sys.argv = [verb, "--help"]
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_module(f"segkit.{verb}", run_name="__main__", alter_sys=True)
        except SystemExit as stop:
            code = stop.code or 0
        except Exception as err:  # noqa: BLE001 -- one verb's crash is that verb's failure, not every verb's
            code = repr(err)
    helps[verb] = {"code": code, "stdout": out.getvalue(), "torch_imported": "torch" in sys.modules}
print(json.dumps(helps))
"""


@pytest.fixture(scope="module")
def helps(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every command's ``--help``: exit code and standard output, by verb."""
    done = subprocess.run([sys.executable, "-c", HELP_SCRIPT, *VERBS], cwd=tmp_path_factory.mktemp("help"),
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_starts_with_usage_and_lists_the_experiments(helps: dict) -> None:
    assert helps["train"]["code"] == 0
    assert helps["train"]["stdout"].startswith("Usage: python -m segkit.train +experiment=NAME")
    experiments = (
        "auto, camvid, hymenoptera, isbi2012, isbi2012_from_hymenoptera, isbi2012_paper, quickstart, shapes_classifier"
    )
    assert f"experiment: {experiments}" in helps["train"]["stdout"]


@pytest.mark.parametrize("verb", [v for v in VERBS if v != "train"])
def test_every_command_help_starts_with_a_usage_line(verb: str, helps: dict) -> None:
    assert helps[verb]["code"] == 0
    assert helps[verb]["stdout"].startswith(f"Usage: python -m segkit.{verb} ")


def test_help_is_answered_before_torch_is_imported(helps: dict) -> None:
    """torch, Lightning and torchvision took 10-18 s to import here, and ``--help`` waited for them."""
    assert not any(help["torch_imported"] for help in helps.values()), {
        v: h["torch_imported"] for v, h in helps.items()
    }


def test_a_typo_is_answered_before_torch_is_imported(tmp_path: Path) -> None:
    script = (
        "import runpy, sys\n"
        "sys.argv = ['segkit.train', '+experiment=quickstart', 'trainer.max_epoch=2']\n"
        "try:\n"
        "    runpy.run_module('segkit.train', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as stop:\n"
        "    print('exit', stop.code, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "exit 2 False", done.stdout + done.stderr[-2000:]
    assert "did you mean trainer.max_epochs?" in done.stderr


def test_importing_segkit_keeps_albumentations_off_the_network(fresh_imports: dict) -> None:
    """albumentations asks PyPI for its newest version at import unless NO_ALBUMENTATIONS_UPDATE is set: a
    user who had not read that far waited on the network (or got a warning) with every command."""
    assert fresh_imports["calls"] == []


def test_a_run_piped_to_a_file_shows_progress_and_no_dependency_noise(tmp_path: Path) -> None:
    done = run("+experiment=quickstart", "trainer.max_epochs=2", "data.train_dataset.num_samples=32",
               "data.val_dataset.num_samples=4", "callbacks.log_progress.every_seconds=0",
               f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    log = (tmp_path / "run" / "train.log").read_text()
    for text in (output, log):
        assert "validated | epoch 1/1 | step 4/4 (100%)" in text  # progress, with no terminal attached
    assert "Model: UNet (encoder unet): 0.48 M parameters, 0.48 M trainable" in log
    noises = ("💡 Tip", "LeafSpec", "Total FLOPs", "not supported by the model summary", "jit.interface",
              "smaller than the logging interval")  # fmt: skip
    for noise in noises:
        assert noise not in output, noise


@pytest.mark.slow  # > 20 s: the default suite stays near 10 minutes
def test_a_time_budgeted_run_shows_progress_against_its_budget(tmp_path: Path) -> None:
    done = run("+experiment=quickstart", "trainer.max_time=00:00:00:06", "trainer.max_epochs=100000",
               "data.train_dataset.num_samples=16", "data.val_dataset.num_samples=2",
               "callbacks.log_progress.every_seconds=0", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    lines = [line for line in (tmp_path / "run" / "train.log").read_text().splitlines() if " it/s | " in line]
    assert lines and all("of the 0:00:06 budget), ETA" in line for line in lines), lines[:3]
    assert not any("/99999" in line or "/400000" in line for line in lines)  # no count out of 100000 epochs


def test_a_misspelt_key_gets_its_close_match(tmp_path: Path) -> None:
    done = run("+experiment=quickstart", "trainer.max_epoch=2", cwd=tmp_path)
    assert done.returncode == 2
    assert "did you mean trainer.max_epochs?" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "outputs").exists()  # refused before any run directory


@pytest.mark.parametrize(
    ("verb", "args", "needed"),
    [
        ("predict", [], "ckpt=, input=, output="),
        ("predict", ["ckpt=run", "input=a.png"], "output="),
        ("eval", [], "ckpt="),
        ("export", ["ckpt=run"], "output="),
        ("serve", [], "ckpt="),
        ("crossval", [], "dir="),
    ],
)
def test_a_missing_value_is_named_with_the_usage_line(verb: str, args: list[str], needed: str, capsys) -> None:
    """Hydra answered ``segkit.predict`` without ``output=`` with an omegaconf traceback about
    ``hydra.run.dir``; the command now exits 2 naming what it needs, before Hydra runs it."""
    from segkit.cli import check_overrides

    with pytest.raises(SystemExit) as exited:
        check_overrides(verb, f"segkit.{verb}", args)
    assert exited.value.code == 2
    message, usage = capsys.readouterr().err.splitlines()
    assert message == f"segkit.{verb}: needs {needed} (see --help)"
    assert usage.startswith(f"Usage: python -m segkit.{verb} ")


def test_a_val_fraction_beside_a_val_folder_or_a_fold_without_folds_is_refused(capsys) -> None:
    """``data.val_fraction=0.25`` with ``data=folder``'s ``val/`` folder trained on all of ``train/`` and
    validated on ``val/``, without a word: the share is held out only without a ``val_dataset``."""
    from segkit.cli import check_overrides, command_line_problem

    folder = ["data=folder", "paths.data_dir=cells", "data.num_classes=2", "data.val_fraction=0.25"]
    with pytest.raises(SystemExit) as exited:
        check_overrides("train", "segkit.train", folder)
    assert exited.value.code == 2
    assert "data.val_fraction=0.25 holds out a share of train/ only without a val_dataset" in capsys.readouterr().err
    assert command_line_problem("train", [*folder, "data.val_dataset=null"]) is None
    assert command_line_problem("train", [*folder, "data.num_folds=4", "data.fold=0"]) is None
    assert command_line_problem("plan", folder) is not None  # the planner reads the same data config
    fold = command_line_problem("train", ["data=folder", "paths.data_dir=cells", "data.num_classes=2", "data.fold=2"])
    assert fold == "data.fold=2 picks one of data.num_folds folds: give data.num_folds=K too"  # it did nothing


@pytest.mark.parametrize("verb", ["predict", "eval", "serve"])
def test_an_output_that_is_a_file_is_refused_before_hydra(verb: str, tmp_path: Path, capsys) -> None:
    """``output=run.log``, an existing file, ended in Hydra's ``os.mkdir`` traceback (FileExistsError)."""
    from segkit.cli import check_overrides

    (tmp_path / "run.log").write_text("")
    args = [f"output={tmp_path / 'run.log'}", "ckpt=run", *(["input=a.png"] if verb == "predict" else [])]
    with pytest.raises(SystemExit) as exited:
        check_overrides(verb, f"segkit.{verb}", args)
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"segkit.{verb}: output={tmp_path / 'run.log'} is a file; {FOLDER_HINT}\n"
    check_overrides(verb, f"segkit.{verb}", [f"output={tmp_path / 'new'}", *args[1:]])  # a new folder is fine


FOLDER_HINT = "the command writes its outputs into a folder there: give another path"


def test_commands_with_every_value_given_pass_the_check() -> None:
    from segkit.cli import check_overrides

    check_overrides("train", "segkit.train", [])
    check_overrides("predict", "segkit.predict", ["ckpt=run", "input=a.png", "output=out"])
    check_overrides("train", "segkit.train", ["-m", "data.fold=0,1"])  # a sweep: Hydra reads it


def test_an_expected_error_met_while_building_from_the_config_is_one_line(caplog, monkeypatch) -> None:
    """Hydra's ``instantiate`` wraps what a constructor raises in an ``InstantiationException`` printed as the
    cause's ``repr`` (quotes escaped, ``\\n`` for line breaks) under "Error in call to target"; the cause
    is now the one line, as if the command had raised it. Other errors keep their traceback."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from segkit.cli import clear_errors
    from segkit.models.weights import WeightsUnavailableError

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    cfg = OmegaConf.create({"model": {"_target_": "segkit.models.UNet", "num_classes": 2, "encoder": "not_a_model"}})
    with caplog.at_level("ERROR"), pytest.raises(SystemExit) as exited:
        clear_errors(lambda c: instantiate(c.model))(cfg)
    assert exited.value.code == 1
    assert caplog.messages == ["ValueError: timm cannot build encoder 'not_a_model': Unknown model (not_a_model) "
                               "(HYDRA_FULL_ERROR=1 shows the traceback)"]  # fmt: skip

    def offline(_):
        raise WeightsUnavailableError("Could not fetch pretrained weights 'resnet18'")

    with pytest.raises(SystemExit):
        clear_errors(offline)(cfg)
    assert caplog.messages[-1].startswith("WeightsUnavailableError: Could not fetch pretrained weights 'resnet18'")
    timer = OmegaConf.create({"model": {"_target_": "pytorch_lightning.callbacks.Timer", "duration": "5min"}})
    with pytest.raises(SystemExit):  # Lightning's MisconfigurationException: a trainer setting it refuses
        clear_errors(lambda c: instantiate(c.model))(timer)
    assert caplog.messages[-1].startswith("MisconfigurationException: `Timer(duration='5min')` is not a valid")
    not_expected = OmegaConf.create({"model": {"_target_": "builtins.divmod", "_args_": [1, 0]}})
    with pytest.raises(Exception, match="Error in call to target 'builtins.divmod'"):  # ZeroDivisionError
        clear_errors(lambda c: instantiate(c.model))(not_expected)


def test_predict_without_arguments_prints_its_usage_not_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "segkit.predict"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.startswith("segkit.predict: needs ckpt=, input=, output=")


def test_an_expected_error_is_one_line_in_the_console_and_the_log(tmp_path: Path) -> None:
    done = run("data=folder", f"paths.data_dir={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'run'}",
               cwd=tmp_path)  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in output
    assert "nowhere" in output and "HYDRA_FULL_ERROR=1" in output
    assert "nowhere" in (tmp_path / "run" / "train.log").read_text()


@pytest.mark.slow  # > 20 s: the default suite stays near 10 minutes
def test_export_writes_its_log_beside_the_exported_file(trained_run: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "segkit.export", f"ckpt={trained_run}",
                           f"output={tmp_path / 'out' / 'm.onnx'}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["export.log", "m.onnx"]
    assert not (tmp_path / "export.log").exists()
    lines = (tmp_path / "out" / "export.log").read_text().splitlines()
    assert [line.split("] - ")[1].split()[0] for line in lines] == ["Exported", "Parity"]  # no onnxscript INFO


def test_the_synthetic_folder_writer_makes_a_folder_dataset(tmp_path: Path) -> None:
    from segkit.data import FolderDataset
    from segkit.data.synthetic import write_folder

    root = write_folder(tmp_path / "shapes", train=3, val=2, size=40)
    dataset = FolderDataset(root / "val", num_classes=4)
    assert len(dataset) == 2 and dataset[0]["image"].shape == (40, 40, 3) and int(dataset[0]["mask"].max()) <= 3


def test_a_command_writing_to_a_file_asks_for_no_colour_codes(monkeypatch) -> None:
    """Optuna's colorlog lines carried ANSI codes into a sweep's piped log; NO_COLOR=1 turns them off."""
    import io
    import logging

    from optuna.logging import create_default_formatter

    from segkit.quiet import no_colour_codes_in_files

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    no_colour_codes_in_files()
    record = logging.LogRecord("optuna", logging.INFO, __file__, 1, "A new study created", None, None)
    assert "\x1b[" not in create_default_formatter().format(record)


def test_ranks_above_zero_keep_info_lines_out_of_the_terminal(tmp_path: Path) -> None:
    """Under DDP each rank printed every INFO line to the one terminal; other ranks now log them to their
    file only, and their warnings still reach the terminal."""
    import io
    import logging

    from segkit.quiet import console_info_on_rank_zero_only

    root = logging.getLogger()
    terminal, file = logging.StreamHandler(io.StringIO()), logging.FileHandler(tmp_path / "rank1.log")
    saved = root.handlers, root.level
    root.handlers, root.level = [terminal, file], logging.INFO
    try:
        console_info_on_rank_zero_only(rank=0)
        logging.getLogger("segkit.x").info("rank zero's line")
        console_info_on_rank_zero_only(rank=1)
        logging.getLogger("segkit.x").info("an info line")
        logging.getLogger("segkit.x").warning("a warning")
    finally:
        root.handlers, root.level = saved
        file.close()
    assert terminal.stream.getvalue().splitlines() == ["rank zero's line", "a warning"]
    assert (tmp_path / "rank1.log").read_text().splitlines() == ["rank zero's line", "an info line", "a warning"]
