"""nnU-Net v2's 2d configuration against segkit's ``+experiment=auto``: same machine, same wall-clock budget,
same data, one scoring function.

    pip install -e '.[bench]'          # nnunetv2 into the project venv, so it reuses segkit's torch
    NO_ALBUMENTATIONS_UPDATE=1 python benchmarks/nnunet_vs_segkit.py --dataset isbi2012 --minutes 5 \\
        --seeds 42 7 3 [--data-dir ../shared/data] [--device cpu]

    # a folder of your own (data=folder: <folder>/<train|val>/{images,masks}), data overrides after --
    python benchmarks/nnunet_vs_segkit.py --dataset folder --folder outputs/unseen_nuclei --minutes 5 \
        -- data.train_dataset.mask_threshold=127

Once per dataset: the data config's training split is written in nnU-Net's raw format (PNG, one file a case,
labels as segkit maps them; CamVid's void becomes nnU-Net's ``ignore`` label), and nnU-Net runs its own
fingerprint, 2d plan and preprocessing (``nnUNetv2_plan_and_preprocess -c 2d``), as segkit plans before it
trains; neither side's planning counts in its budget.

Then for each seed, one after the other (never two runs at once):
- nnU-Net: its 2d configuration and plan, trained on every training case (``fold='all'``) by
  :class:`BudgetTrainer`, nnU-Net's trainer with one change: it stops at the wall-clock budget and its poly
  learning rate anneals over the budget's elapsed time instead of 1000 epochs (the fair form: 1000 x 250
  iterations do not fit a few minutes); 25 iterations an epoch with 5 validation iterations, nnU-Net's ratio.
  Predicted with nnU-Net's defaults (sliding window, step 0.5, Gaussian, mirroring).
- segkit: ``python -m segkit.train +experiment=auto data=<dataset> trainer.max_time=... seed=...``; its final
  weights predicted by ``Predictor`` with its defaults: the test-time flips the plan recorded (``task.tta``: the
  4 flips for the folder stand-in, the mirror for CamVid, none for ISBI, whose runs score topology), as
  nnU-Net mirrors.
Both are scored on the data config's validation split (ISBI slices 24-29, CamVid's val) by :func:`score`:
one confusion matrix pooled over the images (pixel error, IoU per class, mIoU); for ISBI the adapted Rand
error per image; for a two-class folder the foreground IoU pooled and its mean over the images (issue 21's two
figures for a folder nobody tuned for, ``benchmarks/unseen_folder.py``).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from budget_runs import mean_std, run_experiment  # noqa: E402

from segkit.inference import Predictor  # noqa: E402
from segkit.inference.evaluation import confusion  # noqa: E402
from segkit.metrics import ImageMetricMean, iou_per_class, segmentation_scores  # noqa: E402

KEYS = {
    "isbi2012": ("pixel_error", "iou_membrane", "adapted_rand_error"),
    "camvid": ("miou", "pixel_error"),
    "folder": ("foreground_iou", "image_foreground_iou", "pixel_error"),
}
SCORING = {"isbi2012": ["task.image_metrics=[adapted_rand_error]"], "camvid": [], "folder": []}
DATASET_ID = {"isbi2012": 501, "camvid": 502, "folder": 503}
DEFAULT_DEVICE = torch.device("cuda")  # nnU-Net's trainer default


def data_config(dataset: str, data_dir: Path, overrides: list[str]):  # noqa: ANN201
    with initialize_config_module(config_module="segkit.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"data={dataset}", f"paths.data_dir={data_dir}", *overrides])
    return cfg.data


def class_names(data) -> list[str]:  # noqa: ANN001
    """The data config's class names; ``background`` and ``class<i>`` where it names none (``data=folder``)."""
    return list(data.class_names or ["background", *(f"class{c}" for c in range(1, int(data.num_classes)))])


def score(preds: list[np.ndarray], samples, data) -> dict:  # noqa: ANN001
    """The same figures for either side, from predicted class-index masks."""
    k, ignore = int(data.num_classes), int(data.ignore_index)
    total = torch.zeros(k, k, dtype=torch.int64)
    rand = ImageMetricMean("adapted_rand_error", 1, ignore)
    rand_scores, image_ious = [], []
    for pred, sample in zip(preds, samples, strict=True):
        target = np.asarray(sample["mask"])
        matrix = confusion(target, pred, k, ignore)
        total += matrix
        if data.num_classes == 2:
            rand_scores.append(rand.image_score(pred, target))
            image_ious.append(float(iou_per_class(matrix)[1]))  # NaN: no foreground either side
    pooled = segmentation_scores(total, class_names(data), "val")
    scores = {key.split("/", 1)[1]: value for key, value in pooled.items()}
    scores["pixel_error"] = 1.0 - float(total.diag().sum()) / max(int(total.sum()), 1)
    if rand_scores:
        scores["adapted_rand_error"] = float(np.mean(rand_scores))
        scores["foreground_iou"] = float(iou_per_class(total)[1])
        scores["image_foreground_iou"] = float(np.nanmean(image_ious))
    return scores


def write_raw(dataset: str, data, root: Path) -> tuple[str, list[Path]]:
    """The training split in nnU-Net's raw format and the validation images as PNG files to predict (RGB or
    grey, as the data config reads them: a folder's alpha channel is dropped on both sides)."""
    name = f"Dataset{DATASET_ID[dataset]}_{dataset}"
    raw = root / "nnUNet_raw" / name
    train = instantiate(data.train_dataset)(transform=None)
    val = instantiate(data.val_dataset)(transform=None)
    k, ignore = int(data.num_classes), int(data.ignore_index)
    (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw / "labelsTr").mkdir(parents=True, exist_ok=True)
    (root / "val_images").mkdir(parents=True, exist_ok=True)
    has_ignore = False
    for i in range(len(train)):
        sample = train[i]
        image = np.asarray(sample["image"])
        Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(
            raw / "imagesTr" / f"case_{i:04d}_0000.png"
        )
        mask = np.asarray(sample["mask"]).astype(np.uint8)
        has_ignore |= bool((mask == ignore).any())
        mask[mask == ignore] = k  # nnU-Net's ignore label is the highest one
        Image.fromarray(mask).save(raw / "labelsTr" / f"case_{i:04d}.png")
    val_paths = []
    for i in range(len(val)):
        image = np.asarray(val[i]["image"])
        path = root / "val_images" / f"val{i:04d}_0000.png"
        Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(path)
        val_paths.append(path)
    channels = {"0": "EM"} if train[0]["image"].shape[2] == 1 else {"0": "R", "1": "G", "2": "B"}
    labels = {"background" if c == 0 else str(n): c for c, n in enumerate(class_names(data))}
    if has_ignore:
        labels["ignore"] = k
    spec = {"channel_names": channels, "labels": labels, "numTraining": len(train), "file_ending": ".png"}
    (raw / "dataset.json").write_text(json.dumps(spec, indent=2))
    return name, val_paths


def nnunet_env(root: Path, device: str) -> dict:
    """nnU-Net's folders; 2 augmentation processes (the CPU's cores); on the CPU no torch.compile, whose
    compile time would eat a budget of minutes (nnU-Net compiles only where ``nnUNet_compile`` allows)."""
    env = {"nnUNet_raw": str(root / "nnUNet_raw"), "nnUNet_preprocessed": str(root / "nnUNet_preprocessed"),
           "nnUNet_results": str(root / "nnUNet_results"),
           "nnUNet_n_proc_DA": str(min(os.cpu_count() or 2, 12))}  # fmt: skip
    if device == "cpu":
        env["nnUNet_compile"] = "f"
    return env


def make_budget_trainer(minutes: float):  # noqa: ANN201
    """nnU-Net's trainer, stopped at the budget, its poly learning rate annealed over the elapsed time."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class BudgetTrainer(nnUNetTrainer):
        # nnU-Net records its trainer's __init__ arguments by name: the same signature, spelled out
        def __init__(self, plans: dict, configuration: str, fold: int | str, dataset_json: dict,
                     device: torch.device = DEFAULT_DEVICE) -> None:  # fmt: skip
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.budget_s = minutes * 60
            self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = 25, 5
            self.budget_steps = 0

        def run_training(self) -> None:
            self.on_train_start()
            start = time.monotonic()
            while time.monotonic() - start < self.budget_s:
                self.on_epoch_start()
                self.on_train_epoch_start()
                outputs = []
                for _ in range(self.num_iterations_per_epoch):
                    done = (time.monotonic() - start) / self.budget_s
                    if done >= 1:
                        break
                    for group in self.optimizer.param_groups:  # nnU-Net's poly (exponent 0.9), over the budget
                        group["lr"] = self.initial_lr * (1 - done) ** 0.9
                    outputs.append(self.train_step(next(self.dataloader_train)))
                    self.budget_steps += 1
                if outputs:
                    self.on_train_epoch_end(outputs)
                with torch.no_grad():
                    self.on_validation_epoch_start()
                    val = [
                        self.validation_step(next(self.dataloader_val))
                        for _ in range(self.num_val_iterations_per_epoch)
                    ]
                    self.on_validation_epoch_end(val)
                self.on_epoch_end()
            self.on_train_end()

    return BudgetTrainer


def run_nnunet(
    name: str, root: Path, val_paths: list[Path], minutes: float, seed: int, device: str
) -> tuple[list, int, dict]:
    """Train nnU-Net's 2d configuration for ``minutes`` and predict the validation images."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    pre = root / "nnUNet_preprocessed" / name
    plans, dataset_json = load_json(str(pre / "nnUNetPlans.json")), load_json(str(pre / "dataset.json"))
    plans["continue_training"] = False  # what nnUNetv2_train puts there: a fresh run
    trainer = make_budget_trainer(minutes)(plans, "2d", "all", dataset_json, device=torch.device(device))
    trainer.run_training()
    trainer.set_deep_supervision_enabled(False)
    trainer.network.eval()
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=False, device=torch.device(device), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)  # fmt: skip
    weights = [{k: v.detach().clone() for k, v in trainer.network.state_dict().items()}]  # the final weights
    predictor.manual_initialization(trainer.network, trainer.plans_manager, trainer.configuration_manager, weights,
                                    trainer.dataset_json, "nnUNetTrainer",
                                    trainer.inference_allowed_mirroring_axes)  # fmt: skip
    out = root / f"pred_seed{seed}_{time.strftime('%H-%M-%S')}"
    out.mkdir(parents=True)
    targets = [str(out / p.name.replace("_0000.png", "")) for p in val_paths]
    predictor.predict_from_files([[str(p)] for p in val_paths], targets,
                                 save_probabilities=False, overwrite=True, num_processes_preprocessing=1,
                                 num_processes_segmentation_export=1)  # fmt: skip
    preds = [np.asarray(Image.open(f"{target}.png")) for target in targets]
    return preds, trainer.budget_steps, {"epochs": trainer.current_epoch}


def nnunet_plan(name: str, root: Path) -> str:
    plans = json.loads((root / "nnUNet_preprocessed" / name / "nnUNetPlans.json").read_text())
    c = plans["configurations"]["2d"]
    arch = c["architecture"]["arch_kwargs"]
    return (f"patch {c['patch_size']}, batch {c['batch_size']}, {arch['n_stages']} stages of "
            f"{arch['features_per_stage'][0]}-{arch['features_per_stage'][-1]} features, "
            f"{arch['norm_op'].rsplit('.', 1)[-1]}, normalisation {c['normalization_schemes']}")  # fmt: skip


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(KEYS), default="isbi2012")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 3])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=os.environ.get("SEGKIT_DATA_DIR", "../shared/data"))
    parser.add_argument("--folder", type=Path, help="--dataset folder: <folder>/<train|val>/{images,masks}")
    parser.add_argument("--skip-segkit", action="store_true")
    parser.add_argument("--prepare-only", action="store_true", help="convert, plan and preprocess; train nothing")
    parser.add_argument("overrides", nargs="*", help="data overrides for both sides (after --)")
    args = parser.parse_args()
    if (args.dataset == "folder") != (args.folder is not None):
        parser.error("--folder goes with --dataset folder, and only with it")
    data_dir = (args.folder or Path(args.data_dir)).resolve()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}", flush=True)
    data = data_config(args.dataset, data_dir, args.overrides)
    label = data_dir.name if args.folder else args.dataset  # a folder's own name: two folders, two roots
    root = Path("outputs") / "benchmark_nnunet" / label
    os.environ.update(nnunet_env(root.resolve(), args.device))
    name, val_paths = write_raw(args.dataset, data, root)
    if not (root / "nnUNet_preprocessed" / name / "nnUNetPlans.json").is_file():
        started = time.monotonic()
        tool = Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"  # the venv's console script
        command = [str(tool), "-d", str(DATASET_ID[args.dataset]), "-c", "2d", "-np", "2", "--verify_dataset_integrity"]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        print(f"nnU-Net planning and preprocessing: {time.monotonic() - started:.0f} s", flush=True)
    print(f"nnU-Net's 2d plan: {nnunet_plan(name, root)}", flush=True)
    if args.prepare_only:
        return
    val = instantiate(data.val_dataset)(transform=None)
    keys = KEYS[args.dataset] if args.dataset != "folder" or data.num_classes == 2 else ("miou", "pixel_error")
    results: dict[str, list[dict]] = {"nnU-Net v2 2d": [], "segkit auto": []}
    for seed in args.seeds:
        print(f"nnU-Net v2 2d, seed {seed}, {args.minutes:g} min", flush=True)
        preds, steps, extra = run_nnunet(name, root, val_paths, args.minutes, seed, args.device)
        row = score(preds, val, data) | {"steps": steps}
        results["nnU-Net v2 2d"].append(row)
        print(
            f"  {steps} steps ({extra['epochs']} epochs): " + ", ".join(f"{k} {row[k]:.4f}" for k in keys), flush=True
        )
        if args.skip_segkit:
            continue
        print(f"segkit auto, seed {seed}, {args.minutes:g} min", flush=True)
        overrides = [f"data={args.dataset}", *args.overrides, *SCORING[args.dataset], f"seed={seed}"]
        if args.device.startswith("cuda"):
            overrides.append("trainer=gpu")
        _, steps, run_dir = run_experiment("auto", data_dir, args.minutes, overrides)
        predictor = Predictor(run_dir, device=args.device)
        preds = [predictor.predict(np.asarray(val[i]["image"])) for i in range(len(val))]
        row = score(preds, val, data) | {"steps": steps}
        results["segkit auto"].append(row)
        print(f"  {run_dir}: {steps} steps: " + ", ".join(f"{k} {row[k]:.4f}" for k in keys), flush=True)
    print(f"\n{label}, {args.minutes:g} min a run, seeds {args.seeds}, final weights, scored alike")
    print("| side | steps | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 2) + "|")
    for side, rows in results.items():
        if rows:
            cells = " | ".join(mean_std([r[k] for r in rows]) for k in keys)
            print(f"| {side} | {np.mean([r['steps'] for r in rows]):.0f} | {cells} |")


if __name__ == "__main__":
    main()
