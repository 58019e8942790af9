"""Plan a run from the data and the budget: fingerprint the training split, probe the device, decide.

``plan_run(cfg)`` is what ``python -m segkit.plan`` and ``python -m segkit.train +experiment=auto`` both call;
:func:`planned_config` plans (or reads the plan of rank 0 or of an earlier job), saves it
(:mod:`~segkit.planning.record`) and composes it under what the user typed
(:mod:`~segkit.planning.overrides`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from segkit.data.folder import FolderDataset
from segkit.data.io import image_size
from segkit.data.normalize import PER_IMAGE
from segkit.data.settings import check_crop_settings, checked_batch_size, checked_patch_size
from segkit.inference.sliding_window import WHOLE_IMAGE_PIXELS, default_tile, tile_starts
from segkit.models import UNet
from segkit.planning import decisions as rules
from segkit.planning.cpu_precision import ProbedPrecision
from segkit.planning.decisions import Decision
from segkit.planning.fingerprint import fingerprint
from segkit.planning.overrides import apply_plan, composed_value, overriding, typed_network, typed_value, user_keys
from segkit.planning.probe import time_forward, time_training_step
from segkit.planning.record import Plan, read_plan, save_plan

log = logging.getLogger(__name__)

# base_channels the probe may take. No CPU plan took 48 and won: CamVid at 30 minutes (646 steps) and 96² shapes
# (1200 steps) lost to 16 channels, and the nuclei stand-in at 30 minutes, with both floors cleared (4742
# steps, 259 M pixels), scored 0.672 pooled IoU against 0.786 for 32 channels (benchmarks/README.md). It ran at
# AdamW's 0.001, which over-steps 48 channels (0.565 at 1200 steps, 0.706 at 0.00033); 48 channels at a lower
# rate are unmeasured at a budget, so the cap stays.
WIDTHS = {"cpu": (8, 16, 32), "cuda": (16, 32, 64)}
TYPED = "typed"  # the probe's name for the network the user typed (``model.base_channels=32``, ``model=...``)
UNTIMED_MODEL_KEYS = ("model.in_channels", "model.num_classes", "model.weights", "model.strict_weights")
# Facts the plan plans for when typed, as it does for the data: the fingerprint is read through a typed
# intensity scaling and colour mode, and the probe times typed crops and batches
COLOR_MODE, INTENSITY = "data.train_dataset.color_mode", "data.train_dataset.intensity"
PATCH_SIZE, BATCH_SIZE = "data.patch_size", "data.batch_size"


def training_pairs(cfg: DictConfig) -> tuple[FolderDataset, list[tuple[Path, Path]]]:
    """The training split's files, as the run would read them (every pair checked). Never decoded into a
    cache here, even when ``data.train_dataset.cache=true``: the run's own dataset does that once."""
    dataset = folder_factory(cfg)(cache=False)
    return dataset, [(image, mask) for _, image, mask in dataset.samples]


def folder_factory(cfg: DictConfig) -> Callable[..., FolderDataset]:
    """``data.train_dataset``'s factory (a ``_partial_`` class, as the datamodule gets it), refused unless it
    makes image/mask folders: the planner plans segmentation from a fingerprint of masks, and class folders
    (``data=hymenoptera``) or generated data have none. Nothing is read."""
    factory = instantiate(cfg.data.train_dataset)
    made = getattr(factory, "func", factory)
    if not (isinstance(made, type) and issubclass(made, FolderDataset)):
        name = getattr(made, "__name__", type(made).__name__)
        raise ValueError(
            f"the planner plans segmentation from image/mask folders (data=folder, isbi2012, camvid); "
            f"data.train_dataset makes {name}. Class folders train with a classification experiment "
            "(+experiment=hymenoptera), without +experiment=auto"
        )
    return factory


def validation_images(cfg: DictConfig, train_count: int) -> tuple[int, list[tuple[int, int]]]:
    """How many validation images a pass scores, and their sizes (headers only)."""
    if cfg.data.get("val_dataset") is None:
        return max(1, round(train_count * float(cfg.data.get("val_fraction", 0.2)))), []
    dataset = instantiate(cfg.data.val_dataset)()
    return len(dataset), [image_size(path) for _, path, _ in dataset.samples]


def validation_pixels(val_sizes: list[tuple[int, int]], n_val: int, fp: dict, tile: Sequence[int]) -> float:
    """The pixels one validation pass computes: the validation images' own sizes when known, else ``n_val``
    images of the training split's mean size. The probe times the median image and scales by pixels (on the
    2-core CPU a forward pass costs the same per pixel at 256x320 and 1040x1388 within 30 %): on a folder
    whose largest image is 17x the median, 11 images cost 28 median images, not 11. An image over
    ``WHOLE_IMAGE_PIXELS`` is validated tile by tile at overlap 0.5 (as eval scores it): it counts the pixels
    of its tiles, about 4x its own (a 4000x3000 image took 1.9x as long as in one pass here, in 1/5 the memory)."""
    if val_sizes:
        return float(sum(computed_pixels(hw, tile) for hw in val_sizes))
    median = (int(fp["height"]["median"]), int(fp["width"]["median"]))
    mean_pixels = fp["pixels"] / fp["images"]
    return n_val * mean_pixels * computed_pixels(median, tile) / (median[0] * median[1])


def computed_pixels(hw: Sequence[int], tile: Sequence[int]) -> int:
    """Pixels the network sees to validate one ``hw`` image: the image itself up to ``WHOLE_IMAGE_PIXELS``,
    else every tile of the sliding window (:meth:`SegmentationTask.validation_logits`)."""
    if hw[0] * hw[1] <= WHOLE_IMAGE_PIXELS:
        return hw[0] * hw[1]
    rows, columns = (len(tile_starts(n, min(t, n), 0.5)) for n, t in zip(hw, tile, strict=True))
    return rows * columns * min(tile[0], hw[0]) * min(tile[1], hw[1])


def device_of(cfg: DictConfig) -> str:
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    return "cuda" if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu"


def budget_seconds(cfg: DictConfig) -> float:
    """``trainer.max_time`` in seconds (``DD:HH:MM:SS`` or a dict); the planner needs one."""
    max_time = cfg.trainer.get("max_time")
    if max_time is None:
        raise ValueError("the planner needs a budget: set trainer.max_time (e.g. trainer.max_time=00:00:05:00)")
    found = re.fullmatch(r"(\d+):(\d\d):(\d\d):(\d\d)", max_time.strip()) if isinstance(max_time, str) else None
    if found:  # the form Lightning's Timer reads, so that the run gets the budget that was planned for
        days, hours, minutes, seconds = map(int, found.groups())
        return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
    if not isinstance(max_time, Mapping):
        raise ValueError(
            f"trainer.max_time={max_time!r} is not DD:HH:MM:SS, the form Lightning reads (five minutes: 00:00:05:00)"
        )
    return float(sum(int(max_time.get(k, 0)) * s for k, s in (("days", 86400), ("hours", 3600), ("minutes", 60),
                                                                  ("seconds", 1))))  # fmt: skip


def _size_range(fp: dict) -> str:
    """The training images' smallest and largest sides, as ``HxW to HxW``."""
    h, w = fp["height"], fp["width"]
    return f"{h['min']:.0f}x{w['min']:.0f} to {h['max']:.0f}x{w['max']:.0f}"


def plan_run(
    cfg: DictConfig,
    cache_dir: Path | None = None,
    typed: dict[str, str] | None = None,
    compose: Callable[[list[str]], DictConfig] | None = None,
) -> Plan:
    """Read the training split, probe the device, decide everything the planner owns (see the README).

    ``typed``: the user's overrides (:func:`user_keys`). The probe builds its candidates with the model
    settings the user typed (``model.norm=batch``), and times the user's network when one is typed.
    ``compose``: composes the config for a list of overrides; with a typed rate, the plan composes the
    task's own rate with it (:func:`task_rate`)."""
    typed = typed or {}
    start = time.perf_counter()
    settings = cfg.get("planner") or {}
    patch_typed = overriding(PATCH_SIZE, typed) is not None
    whole = patch_typed and composed_value(cfg, PATCH_SIZE) is None  # typed data.patch_size=null: whole images
    folder_factory(cfg)  # the kind of data, then the crop settings, before any file is read
    # zoom and foreground share act on crops: checked before the data is read, as the datamodule checks them
    check_crop_settings(
        not whole, composed_value(cfg, "data.patch_scale"), composed_value(cfg, "data.foreground_crops")
    )
    dataset, pairs = training_pairs(cfg)
    fp = fingerprint(pairs, cache_dir, dataset.intensity if overriding(INTENSITY, typed) is not None else None)
    num_classes, ignore_index = int(cfg.data.num_classes), int(cfg.data.get("ignore_index", 255))
    enc = dataset.encoding
    plan: list[Decision] = []

    mapping = rules.decide_mask_mapping(fp, num_classes, ignore_index, enc.mapping, enc.threshold)
    plan += mapping
    to_class = rules.class_of_value(num_classes, ignore_index, mapping[0].value if mapping else enc.mapping,
                                    enc.threshold)  # fmt: skip
    stats = rules.class_statistics(fp, num_classes, ignore_index, to_class)
    names = cfg.data.get("class_names")
    present = [c for c, s in stats["classes"].items() if s["pixel_share"] > 0]
    if len(present) < 2:
        raise ValueError(
            f"the masks in {dataset.root} hold only class {present} (stored values {list(fp['mask_values'])}): "
            "nothing to segment. Check data.num_classes and the mask mapping/threshold"
        )
    channels = rules.decide_channels(fp, typed_value(cfg, COLOR_MODE, typed))
    plan += channels
    color_mode, in_channels = channels[0].value, channels[1].value
    plan += rules.decide_intensity(fp)
    plan.append(rules.decide_cache(fp, in_channels))
    per_image = composed_value(cfg, "data.normalization") == PER_IMAGE
    plan += rules.decide_normalization(fp, cfg.model.get("weights") is not None, color_mode, per_image)

    device = device_of(cfg)
    object_side = rules.typical_object_side(stats["classes"])
    rare_side = rules.rare_object_side(stats["classes"], num_classes, fp["pixels"])
    image_scale = 1.0  # a step's pixels over the probe's: the CPU's step time grows with the pixels
    if not patch_typed:
        patch, patch_why = rules.decide_patch(fp, object_side, device, rare_side)
    elif whole:  # the probe times the typical image; the network pads any size to its stride
        patch = [int(fp["height"]["median"]), int(fp["width"]["median"])]
        patch_why = f"typed: whole images; the probe times the median one ({patch[0]}x{patch[1]}), the depth follows"
        image_scale = fp["pixels"] / fp["images"] / (patch[0] * patch[1])
        if round(image_scale, 1) != 1:
            patch_why += f"; a step costs the mean image, {image_scale:.1f}x its pixels"
    else:  # the probe times the typed crops, and the depth follows them
        patch = list(checked_patch_size(composed_value(cfg, PATCH_SIZE)))
        patch_why = "typed: the probe times these crops, the depth follows"
    depth, depth_why = rules.decide_depth(patch, object_side)
    if not patch_typed:
        patch = [rules.round_up(p, 2**depth) for p in patch]
    smallest = min(fp["height"]["min"], fp["width"]["min"])
    if smallest < 2**depth:
        patch_why += f"; images as small as {smallest:.0f} px (below the stride {2**depth}) are padded, masks ignored"
    plan.append(Decision(PATCH_SIZE, None if whole else patch, patch_why))
    plan.append(Decision("model.depth", depth, depth_why))

    budget = budget_seconds(cfg)
    typed_batch = typed_value(cfg, BATCH_SIZE, typed)
    unstackable = whole and not fp["fixed_size"]  # whole images of different sizes: one a step
    if typed_batch is None:
        batch = 1 if unstackable else rules.BATCH[device]
    else:
        batch = checked_batch_size(typed_batch)
        if unstackable and batch > 1 and overriding("aug", typed) is None:  # a typed aug may crop to one size
            raise ValueError(
                f"data.patch_size=null trains on whole images, but the images in {dataset.root} differ in size "
                f"({_size_range(fp)}): a step of data.batch_size={batch} cannot stack them. Set "
                "data.batch_size=1, or data.patch_size=[256,256] for random crops"
            )
    probe: dict = {"device": device, "patch": patch, "batch": batch}
    norm = rules.decide_norm(batch, stats["classes"])

    yours = typed_network(typed)
    model_keys = [k.replace("/", ".") for k in typed if k.replace("/", ".").split(".")[0] == "model"]
    timed_model = any(k not in UNTIMED_MODEL_KEYS for k in model_keys)  # typed settings that change the network

    def net(width: int | str) -> torch.nn.Module:
        """A candidate: a plain U-Net of ``width`` base channels, the encoder named by ``width``, or (``TYPED``)
        the user's network; each with the plan's settings except those the user typed."""
        if width == TYPED:
            planned = {"depth": depth, "norm": norm.value}
        elif isinstance(width, str):
            planned = {"encoder": width, "up_mode": "bilinear"}
        else:
            planned = {"encoder": "unet", "depth": depth, "base_channels": width, "norm": norm.value}
        if not timed_model:
            return UNet(num_classes=num_classes, in_channels=in_channels, **planned)
        kept = {k: v for k, v in planned.items() if overriding(f"model.{k}", typed) is None}
        unweighted = {k: None for k in ("weights", "encoder_weights") if k in cfg.model}  # timing needs no download
        return instantiate(cfg.model, in_channels=in_channels, **kept, **unweighted)

    peaks: dict[int | str, int | None] = {}

    def step_time(width: int | str, precision: str) -> float:
        probed = time_training_step(net(width), batch, in_channels, tuple(patch), num_classes, device, precision,
                                    channels_last=True)  # fmt: skip
        peaks[width] = probed["peak_bytes"]
        seconds = probed["seconds"] * image_scale
        if isinstance(width, str):
            probe.setdefault("encoder_step_seconds", {}).setdefault(width, []).append(round(seconds, 4))
        return seconds

    widths = [TYPED] if yours else list(settings.get("widths") or WIDTHS[device])
    if device == "cpu":
        timer = ProbedPrecision(step_time)  # each network in its faster precision: bf16 or fp32
    else:
        gpu_precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        timer = partial(step_time, precision=gpu_precision)
    timings = {widths[0]: timer(widths[0])}
    pixels_per_step = batch * patch[0] * patch[1] * image_scale

    if yours:
        chosen, step_seconds, model_plan = TYPED, timings[TYPED], []
        encoder = str(cfg.model.get("encoder", "other"))  # smp's models and others: not segkit's plain U-Net
        log.info("The network is yours (%s): the plan times it instead of choosing one", " ".join(yours))
    else:
        floors = rules.Floors.planned(settings, budget, pixels_per_step, device)
        candidate = Candidate(settings.get("encoder", rules.ENCODER), depth, rules.training_pixels(fp))
        chosen, step_seconds, model_plan = plan_network(timer, timings, widths, floors, candidate)
        encoder = chosen if isinstance(chosen, str) else "unet"
    if device == "cpu":
        precision, precision_why = timer.of(chosen)
        probe["precisions"] = {str(w): timer.of(w)[0] for w in timer.chosen}
    else:
        precision, precision_why = gpu_precision, "GPU autocast with channels-last tensors"
    if encoder != "unet":
        plan = [d for d in plan if d.key != "model.depth"]  # the encoder's stages set the depth
    total_memory = torch.cuda.get_device_properties(0).total_memory if device == "cuda" else None
    probed_batch = batch
    if unstackable and typed_batch is None:
        batch_why = f"whole images of different sizes ({_size_range(fp)}) cannot be stacked: one a step"
    elif typed_batch is None:
        batch, batch_why = rules.decide_batch(device, batch, peaks.get(chosen), total_memory)
    else:
        batch_why = "typed: the probe timed steps of this many crops"
    step_seconds = step_seconds * batch / probed_batch
    probe["step_seconds"] = {str(w): round(t, 4) for w, t in timings.items()}
    if yours:
        probe["typed_network"] = yours

    n_val, val_sizes = validation_images(cfg, len(pairs))
    if val_sizes:
        val_hw = tuple(int(np.median([s[i] for s in val_sizes])) for i in (0, 1))
    else:
        val_hw = (int(fp["height"]["median"]), int(fp["width"]["median"]))
    chosen_net = net(chosen)
    val_tile = default_tile(chosen_net, None if whole else patch)
    timed_hw = val_hw if val_hw[0] * val_hw[1] <= WHOLE_IMAGE_PIXELS else val_tile  # large images: one tile
    one_val = time_forward(chosen_net, in_channels, timed_hw, device, precision)
    val_seconds = one_val * validation_pixels(val_sizes, n_val, fp, val_tile) / (timed_hw[0] * timed_hw[1])
    interval, interval_why = rules.validation_interval(val_seconds, step_seconds, budget)
    planned_steps = rules.TRAINING_SHARE * budget / step_seconds
    probe.update(val_images=n_val, val_size=list(val_hw), val_seconds=round(val_seconds, 2),
                 planned_steps=int(planned_steps))  # fmt: skip

    rate = task_rate(cfg, typed, compose)
    network = "your network" if yours else chosen
    learning_rate = [] if rate is None else [rules.decide_learning_rate(float(rate), device, network, planned_steps)]
    plan += [
        Decision("model", "unet", "segkit's U-Net, trained from scratch (nothing to download)"),
        *model_plan,
        *([] if encoder != "unet" else [norm]),  # an encoder keeps its own norm layers
        Decision("data.batch_size", batch, batch_why),
        Decision(
            "data.samples_per_epoch",
            interval * batch,
            f"an epoch = {interval} steps, then a validation: " + interval_why,
        ),  # fmt: skip
        Decision("trainer.check_val_every_n_epoch", 1, "validate after every (planned-length) epoch"),
        Decision("trainer.val_check_interval", None, "epochs set the cadence"),
        Decision("trainer.max_epochs", 100000, "a cap only: trainer.max_time ends the run"),
        Decision("trainer", "cpu" if device == "cpu" else "gpu", f"the device the probe ran on ({device})"),
        Decision("trainer.precision", precision, precision_why),
        Decision(
            "task.channels_last",
            True,
            "faster convolutions on GPU and CPU (in fp32 too: 6-21 % a step on an AVX2-only CPU, benchmarks/README.md)",
        ),
        rules.decide_schedule(stats["classes"], num_classes),
        *learning_rate,
        Decision("callbacks.export_weights", "final", "the annealed final weights, not a pick on validation"),
        rules.decide_augmentation(
            color_mode, planned_steps, rules.upright(stats["classes"], names), rules.sided(stats["classes"], names)
        ),
        rules.decide_tta(stats["classes"], names, "adapted_rand_error" in (cfg.task.get("image_metrics") or [])),
        *rules.decide_loss(stats["classes"], num_classes, names),
    ]
    if mapping:
        plan.append(Decision("data.ignore_index", ignore_index, "unchanged; 255 is now a class value"))
    return Plan(plan, fp, probe, round(time.perf_counter() - start, 1))


def task_rate(
    cfg: DictConfig, typed: dict[str, str], compose: Callable[[list[str]], DictConfig] | None
) -> float | None:
    """The rate the plan scales: the task's own, composed without a typed ``task.optimizer.lr``.

    The run trains at the typed rate (the user wins, the log says so), while ``plan.yaml`` records the
    plan's own choice, as for every other typed key: scaling the typed rate instead would leave a plan that
    trains at neither rate once the typed one is dropped. ``None`` (no rate decision) for a task without a
    rate (a custom optimizer keeps its own), or when the rate is typed and nothing can compose without it."""
    rate = cfg.task.get("optimizer", {}).get("lr")
    if "task.optimizer.lr" not in typed or rate is None:
        return rate
    if compose is None:
        return None
    rest = [item for key, item in typed.items() if key != "task.optimizer.lr"]
    return compose(rest).task.get("optimizer", {}).get("lr")


@dataclass(frozen=True)
class Candidate:
    """The encoder weighed against the plain U-Net (``planner.encoder``; ``None``: none) and the plan's facts
    that can rule it out whatever its speed: the depth and the training split's pixels."""

    name: str | None
    depth: int
    data_pixels: float


def plan_network(
    step_time: Callable[[int | str], float],
    timings: dict[int | str, float],
    widths: list[int],
    floors: rules.Floors,
    encoder: Candidate,
) -> tuple[int | str, float, list[Decision]]:
    """The network, its step time and its decisions: the encoder when it trains enough in the budget
    (``choose_encoder``), else the widest plain U-Net that meets the ``floors`` (``choose_width``).
    ``step_time(width or encoder name)`` probes one candidate; ``timings`` holds the widths already probed and
    gains the new ones."""
    budget = floors.budget_seconds
    if not encoder.name:
        encoder_why = "planner.encoder=null: only plain U-Nets are weighed"
    else:
        encoder_seconds = None
        eligible = rules.encoder_eligible(encoder.depth, encoder.data_pixels) is None
        if eligible and rules.worth_probing_encoder(timings[widths[0]], budget, encoder.name):
            encoder_seconds = step_time(encoder.name)
            if rules.encoder_trains_enough(encoder_seconds, budget):
                encoder_seconds = (encoder_seconds + step_time(encoder.name)) / 2  # read twice: below
        chosen, encoder_why = rules.choose_encoder(encoder.depth, encoder_seconds, budget, encoder.name,
                                                   encoder.data_pixels)  # fmt: skip
        if chosen != "unet":
            up_why = "learns faster from scratch than 2x2 up-convolutions (CamVid)"
            return chosen, encoder_seconds, [
                Decision("model.encoder", chosen, encoder_why),
                Decision("model.up_mode", "bilinear", up_why),
            ]  # fmt: skip
    chosen, width_why = choose_probed_width(step_time, timings, widths, floors)
    return chosen, timings[chosen], [
        Decision("model.encoder", "unet", encoder_why),
        Decision("model.base_channels", chosen, width_why),
    ]  # fmt: skip


def choose_probed_width(
    step_time: Callable[[int], float], timings: dict[int | str, float], widths: list[int], floors: rules.Floors
) -> tuple[int, str]:
    """Probe the plain U-Net's ``widths`` in order and take the widest that meets the ``floors``
    (:func:`~segkit.planning.decisions.choose_width`); returns it and the reason. ``timings`` gains the
    mean of each width's readings.

    A probe reads a width at one moment, and a 2-core machine's speed moves by a quarter within minutes: a
    width taken on one fast reading made 80 % of the steps it promised (ISBI, 10 minutes, 32 channels). So a
    width wider than the fallback is read once more and the mean of its readings decides; when it misses the
    floors the rule falls back to the next width (read twice in turn). The mean, not the slower: one stalled
    reading (1.6 s against 0.6-0.9 s) once turned CamVid's clear ResNet-34 pick into 16 channels.

    A width whose lower bound (:func:`~segkit.planning.decisions.worth_probing`) misses the floors is not
    probed. The bound grows with the narrower widths' readings, so one stalled reading could rule out a width
    that would have cleared: before a width is ruled out, the one below it is read its second time (which it
    gets anyway when taken), and the bound uses each width's fastest reading (a stall only adds time). The
    other way round, a slow reading of the width below that one lowers the bound: the first probe of a
    planning run read 8 channels at 342 ms where they run at 260 ms (CamVid, 30 minutes), which let 32
    channels through to a 16 s probe that could not clear. So when a faster reading of it could rule the
    width out, it is read its second time first (~1 s there); how much faster it could be is
    :func:`~segkit.planning.decisions.quickest_step`.

    At a short CPU budget the widths end at the first whose step costs over the cap times the narrower one's
    (``floors.max_slowdown``): no wider one is probed. The cap compares each width's fastest of two readings,
    since a stall on either side moves the ratio: a first reading of 16 channels stalled to 1.65x 8's step,
    where they cost 1.1x, would hand a 5-minute plan 8 channels; a stalled 55 ms reading of 16 channels
    (against 38-46 ms in five other plans of the hour) let 32 channels through at 1.48x on the means, where
    they cost 2x."""
    reads: dict[int, list[float]] = {w: [t] for w, t in timings.items() if isinstance(w, int)}

    def read(width: int) -> None:
        reads.setdefault(width, []).append(step_time(width))
        timings[width] = sum(reads[width]) / len(reads[width])

    def worth_probing(width: int) -> bool:
        return rules.worth_probing(fastest(), width, floors)

    def fastest() -> dict[int, float]:
        return {w: min(r) for w, r in reads.items()}

    def faster_could_rule_out(a: int, b: int, width: int) -> bool:  # whether a faster `a` could skip `width`
        return not rules.worth_probing({**fastest(), a: rules.quickest_step(a, b, min(reads[b]))}, width, floors)

    def over_cap(width: int) -> bool:  # whether the cap ends the widths at this one
        return rules.within_slowdown(fastest(), floors.max_slowdown)[1] == width

    skipped = ""
    for width in widths:
        below = max((w for w in reads if w < width), default=None)  # the next narrower width probed
        if width not in reads:
            if sum(w < width for w in reads) >= 2:  # the bound is drawn from two narrower widths, a < b
                a, b = rules.slope_widths(reads, width)
                if len(reads[a]) == 1 and worth_probing(width) and faster_could_rule_out(a, b, width):
                    read(a)
            if not worth_probing(width) and below not in (None, widths[0]) and len(reads[below]) == 1:
                read(below)
            if not worth_probing(width):  # too slow even at its lower bound: its probe would only cost time
                bound = rules.next_width_bound(fastest(), width)
                skipped = (f"; {width} not probed: at least {bound * 1000:.0f} ms a step by the narrower widths' "
                           f"slope, over the floors' {floors.slowest_step() * 1000:.0f} ms")  # fmt: skip
                break
            read(width)
        if not floors.met_by(timings[width]):
            break  # wider ones only get fewer steps
        if below is not None and math.isfinite(floors.max_slowdown):  # the cap weighs the two: twice each
            for w in (below, width):
                if len(reads[w]) == 1:
                    read(w)
        if over_cap(width):
            break  # wider ones are past the cap
    chosen, why = rules.choose_width(timings, floors, fastest())
    while chosen != widths[0] and len(reads[chosen]) < 2:
        read(chosen)
        chosen, why = rules.choose_width(timings, floors, fastest())
    twice = {w: r for w, r in reads.items() if len(r) > 1}
    if twice:
        each = ", ".join(f"{w}: {r[0] * 1000:.0f} and {r[1] * 1000:.0f} ms" for w, r in twice.items())
        weighed = "the floors weigh the mean" + (", the cap the fastest" if math.isfinite(floors.max_slowdown) else "")
        why += f"; read twice ({each}): {weighed}"
    return chosen, why + skipped


def launched_rank() -> int:
    """This process's rank when a launcher (Lightning's DDP, torchrun, SLURM) set one, else 0."""
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def rank_zero_plan(output_dir: Path, timeout: float = 900.0) -> Plan:
    """The plan rank 0 saved in ``output_dir`` (waiting for it up to ``timeout`` seconds)."""
    saved = output_dir / "fingerprint.json"
    deadline = time.monotonic() + timeout
    while not saved.is_file():
        if time.monotonic() > deadline:
            raise FileNotFoundError(
                f"rank {launched_rank()} found no plan from rank 0 in {output_dir} after {timeout:.0f} s; every "
                "rank needs the same run directory (set SEGKIT_RUN_ID, e.g. to $SLURM_JOB_ID)"
            )
        time.sleep(1.0)
    return read_plan(output_dir)


def planned_config(
    cfg: DictConfig,
    overrides: Sequence[str],
    compose: Callable[[list[str]], DictConfig],
    output_dir: str | Path,
    shared_dir: Path | None = None,
) -> DictConfig:
    """``cfg`` itself unless it asks for a plan (``+experiment=auto``); else plan, log the table, save
    ``plan.yaml`` and ``fingerprint.json`` in ``output_dir`` and return the re-composed config.

    ``shared_dir``: where the jobs of one multirun share a plan. The first job plans and saves it there; the
    others take it, so every fold of a cross-validation trains the same planned network."""
    settings = cfg.get("planner")
    if not settings or not settings.get("enabled"):
        return cfg
    if launched_rank() > 0:
        # A DDP process (Lightning's, torchrun's or SLURM's): its own probe would run beside rank 0's and
        # could choose another network, so it waits for rank 0's plan in the shared run directory.
        plan = rank_zero_plan(Path(output_dir))
    elif shared_dir is not None and (shared_dir / "fingerprint.json").is_file():
        plan = read_plan(shared_dir)
        log.info("Taking the plan an earlier job of this multirun saved in %s", shared_dir)
        save_plan(plan, Path(output_dir), f"planned by segkit for {' '.join(overrides)}")
    else:
        plan = plan_run(cfg, typed=user_keys(overrides), compose=compose)
        title = f"planned by segkit for {' '.join(overrides)}"
        if shared_dir is not None:  # the table is logged once, with the run's own copy
            save_plan(plan, shared_dir, title, log_table=False)
            log.info("Plan shared with this multirun's other jobs through %s", shared_dir)
        save_plan(plan, Path(output_dir), title)
    planned, kept = apply_plan(plan, overrides, compose)
    planned.paths.output_dir = str(output_dir)
    if launched_rank() == 0:  # once, not once per process
        for line in kept:
            log.info("Kept: %s", line)
    return planned
