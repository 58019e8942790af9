"""The planner's decisions, one function each: fingerprint (and probe timings) in, settings and reasons out.

Each returns :class:`Decision` objects: a config key (a Hydra override, group choices included), its value
and the reason in words. They are pure functions of their inputs, so each rule is tested on its own with
known answers; :mod:`segkit.planning.planner` runs them in order and probes the device between them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from segkit.planning.fingerprint import HALVES

# Largest training patch (pixels) per device kind: whole images up to this size, crops beyond it. On two
# CPU cores a 256x256 crop at batch 4 is about one step a second for a 16-channel U-Net.
PATCH_CAP = {"cpu": 256 * 256, "cuda": 512 * 512}
MIN_PATCH = 64
BATCH = {"cpu": 4, "cuda": 16}  # patches a step before the memory check
MEMORY_SHARE = 0.8  # of the GPU's memory the probe's peak may reach at the planned batch
CONTEXT = 3  # a crop covers the 90th-percentile object side this many times
# A crop expects this many objects of each rare class (from their count per training pixel): spread
# uniformly, about 5 % of crops would then miss the class (Poisson, e^-3). Small crops of a rare foreground
# are mostly empty: 64² crops of nuclei covering 1.4 % of a folder (one per 10,600 px) held 0.4 nuclei on
# average, and the plan's runs ended at a foreground IoU of 0.02-0.11 where 256² crops reached 0.58.
OBJECTS_PER_CROP = 3
VAL_SHARE = 0.1  # validation may take this share of the wall time
# Per validation besides the forward passes: loader start, metrics, last.ckpt and best-checkpoint writes,
# Lightning's epoch hooks. About 1 s for ISBI's 6 slices on 2 CPU cores (train.log timestamps).
VAL_OVERHEAD_SECONDS = 1.0
MIN_INTERVAL = 50  # steps between validations, at least


@dataclass
class Decision:
    """One planned setting: ``key`` (``data.patch_size`` or a group such as ``aug``), ``value`` and ``reason``."""

    key: str
    value: Any
    reason: str


def round_up(n: float, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)


def receptive_field(depth: int) -> int:
    """Receptive field (px) of the deepest features of the classic U-Net encoder: two 3x3 convs per level and
    2x2 pooling between levels; depth 4 gives the paper's 140 px."""
    return 2 ** (depth + 3) + 2**depth - 4


def class_of_value(num_classes: int, ignore_index: int, mapping: dict | None, threshold: float | None) -> Callable:
    """The stored mask value -> class index (or ``ignore_index``, or ``None`` for a value the encoding rejects)."""

    def to_class(value: int) -> int | None:
        if threshold is not None:
            return int(value > threshold)
        if mapping is not None:
            return mapping.get(value)
        return value if (0 <= value < num_classes or value == ignore_index) else None

    return to_class


def class_statistics(fp: dict, num_classes: int, ignore_index: int, to_class: Callable) -> dict:
    """Per class: pixel share (of labelled pixels), image share, the object sides and count of its values, and
    its pixels in each image half."""
    stats = {
        c: {"pixel_share": 0.0, "image_share": 0.0, "object_side_p90": 0.0, "objects": 0,
            "halves": dict.fromkeys(HALVES, 0)}
        for c in range(num_classes)
    }  # fmt: skip
    ignored = 0.0
    for value, entry in fp["mask_values"].items():
        cls = to_class(int(value))
        if cls is None or cls == ignore_index:
            ignored += entry["pixel_share"]
            continue
        stats[cls]["pixel_share"] += entry["pixel_share"]
        stats[cls]["image_share"] = max(stats[cls]["image_share"], entry["image_share"])
        stats[cls]["object_side_p90"] = max(stats[cls]["object_side_p90"], entry["object_side"].get("p90", 0.0))
        stats[cls]["objects"] += int(entry["object_side"].get("count", 0))
        for half, count in entry.get("halves", {}).items():
            stats[cls]["halves"][half] += count
    labelled = 1.0 - ignored
    for entry in stats.values():
        entry["pixel_share"] = entry["pixel_share"] / labelled if labelled > 0 else 0.0
    return {"classes": stats, "ignored_share": ignored}


def decide_mask_mapping(fp: dict, num_classes: int, ignore_index: int, mapping, threshold) -> list[Decision]:
    """Binary masks stored as 0/255 read as "background and ignored" when 255 is the ignore value: the
    foreground would silently vanish. Map 255 to class 1 when that is the only way any foreground exists."""
    if mapping is not None or threshold is not None or num_classes != 2:
        return []
    values = {int(v) for v in fp["mask_values"]}
    if values == {0, ignore_index} or (ignore_index != 255 and values == {0, 255}):
        return [Decision("data.train_dataset.mask_mapping", {0: 0, 255: 1},
                         "masks hold only 0 and 255: 255 is the foreground (class 1), not ignored")]  # fmt: skip
    return []


def decide_channels(fp: dict, typed_mode: str | None = None) -> list[Decision]:
    """Grey images (stored grey, or RGB with three equal channels) train a 1-channel network. A typed
    ``data.train_dataset.color_mode`` is planned for, like the data overrides: the input channels follow it
    (a grey read of colour images into a 3-channel network fails at the first convolution)."""
    mode = fp["color_mode"]
    stored = fp["stored_channels"]
    kinds = {"grey" if c <= 2 else "colour" for c in stored}  # 2 = grey + alpha
    if typed_mode is not None and typed_mode != mode:
        images = "colour images" if mode == "rgb" else "grey images"
        return [Decision("data.train_dataset.color_mode", typed_mode, f"typed: {images} read as {typed_mode}"),
                Decision("model.in_channels", 1 if typed_mode == "gray" else 3, f"{typed_mode} input")]  # fmt: skip
    if mode == "gray":
        why = "every image is grey" + (" (stored as RGB with equal channels)" if "colour" in kinds else "")
    elif len(kinds) > 1:
        why = f"mixed channel counts {stored}: grey images are repeated to 3 channels"
    else:
        why = "colour images"
    if fp["alpha"]:
        why += "; the alpha channel is dropped"
    return [Decision("data.train_dataset.color_mode", mode, why),
            Decision("model.in_channels", 1 if mode == "gray" else 3, f"{mode} input")]  # fmt: skip


def decide_intensity(fp: dict) -> list[Decision]:
    """16-bit and float images are scaled by their 0.5-99.5 percentiles; 8-bit ones are left as they are. A
    typed scaling (the fingerprint was read through it: ``scaling``) is planned for, like the data."""
    if fp.get("scaling"):
        return [Decision("data.train_dataset.intensity", fp["scaling"],
                         "typed: every image is scaled by it, and the statistics below are of its output")]  # fmt: skip
    if all(d == "uint8" for d in fp["dtypes"]):
        return [Decision("data.train_dataset.intensity", None, "8-bit images: divided by 255")]
    low, high = (_per_channel(fp["intensity"].get(k)) for k in ("raw_p0_5", "raw_p99_5"))
    return [Decision("data.train_dataset.intensity", {"mode": "percentile", "low": 0.5, "high": 99.5},
                     f"{'/'.join(fp['dtypes'])} images (stored range {low}..{high} at the 0.5/99.5 percentiles): "
                     "each scaled by its own percentiles, robust to outliers and gain changes")]  # fmt: skip


def _per_channel(values: list[float] | None) -> str:
    """``448`` for one channel, ``[448, 512, 500]`` for three: stored values as a reason reads them."""
    if not values:
        return "?"
    text = [f"{v:g}" for v in values]
    return text[0] if len(text) == 1 else "[" + ", ".join(text) + "]"


def decide_normalization(
    fp: dict, pretrained: bool, color_mode: str | None = None, per_image: bool = False
) -> list[Decision]:
    """Per-channel z-score with the training split's statistics when training from scratch; a pretrained
    encoder keeps the statistics its weights were trained with (``null``: train.py reads them from the weights).
    ``color_mode``: the mode the run reads in when it differs from the images' own (typed): grey reads of
    colour images take their grey pixels' statistics, colour reads of grey images the grey ones thrice.
    ``per_image``: a typed ``data.normalization=image`` z-scores each image by its own statistics, so no
    dataset statistics are planned."""
    if per_image:
        why = "unused: data.normalization=image z-scores each image by its own per-channel statistics"
        return [Decision("data.mean", None, why), Decision("data.std", None, why)]
    if pretrained:
        return [Decision("data.mean", None, "pretrained encoder: its weights' statistics"),
                Decision("data.std", None, "pretrained encoder: its weights' statistics")]  # fmt: skip
    stats, why = fp["intensity"], "of the training pixels"
    mean, std = stats["mean"], stats["std"]
    if color_mode is not None and color_mode != fp["color_mode"]:
        if color_mode == "gray":
            mean, std, why = [stats["grey_mean"]], [stats["grey_std"]], "of the training pixels read as grey"
        else:
            mean, std, why = mean * 3, std * 3, "of the grey training pixels, for each of the 3 channels"
    mean = [round(m, 4) for m in mean]
    std = [round(max(s, 1e-3), 4) for s in std]
    return [Decision("data.mean", mean, f"per-channel mean {why} (z-score)"),
            Decision("data.std", std, f"per-channel standard deviation {why}")]  # fmt: skip


def typical_object_side(classes: dict) -> float:
    """90th-percentile bounding-box side of the objects of every class but the most frequent one."""
    ranked = sorted(classes.items(), key=lambda kv: -kv[1]["pixel_share"])
    sides = [s["object_side_p90"] for _, s in ranked[1:] if s["pixel_share"] > 0]
    return max(sides) if sides else 0.0


def rare_object_side(classes: dict, num_classes: int, pixels: float) -> float:
    """The crop side (px) at which a crop expects ``OBJECTS_PER_CROP`` objects of every rare class, from
    each one's object count over the training split's ``pixels``; 0 without a rare class."""
    sides = [math.sqrt(OBJECTS_PER_CROP * pixels / classes[c]["objects"])
             for c in rare_classes(classes, num_classes) if classes[c].get("objects")]  # fmt: skip
    return max(sides, default=0.0)


def decide_patch(fp: dict, object_side: float, device: str, rare_side: float = 0.0) -> tuple[list[int], str]:
    """The whole image when the largest fits the device's patch cap, else a square crop covering
    ``CONTEXT`` times the typical object and, where a class is rare, ``rare_side`` (a crop that expects
    ``OBJECTS_PER_CROP`` of its objects); at least ``MIN_PATCH``, at most the cap and the median image."""
    cap = PATCH_CAP.get(device, PATCH_CAP["cpu"])
    h_max, w_max = fp["height"]["max"], fp["width"]["max"]
    if h_max * w_max <= cap:
        patch = [round_up(h_max, 16), round_up(w_max, 16)]
        kind = "fixed" if fp["fixed_size"] else "variable"
        return patch, f"the whole image ({kind} size, largest {int(h_max)}x{int(w_max)}) fits the {device} cap"
    by_rarity = rare_side > CONTEXT * object_side
    wanted = rare_side if by_rarity else CONTEXT * object_side
    side = min(max(round_up(wanted, 16), MIN_PATCH), int(math.isqrt(cap)))
    patch = [min(side, round_up(fp["height"]["median"], 16)), min(side, round_up(fp["width"]["median"], 16))]
    why = f"{CONTEXT}x the typical object side ({object_side:.0f} px)"
    if by_rarity:
        why = f"{rare_side:.0f} px, where a crop expects {OBJECTS_PER_CROP} objects of the rare class (> {why})"
    return patch, (
        f"images up to {int(h_max)}x{int(w_max)} exceed the {device} cap of {int(math.isqrt(cap))}^2 px: crops of "
        f"{why}, within [{MIN_PATCH}, cap]"
    )


def decide_depth(patch: Sequence[int], object_side: float) -> tuple[int, str]:
    """Pool until the deepest map is at least 8 px (nnU-Net stops at 4-8 px), but no deeper than one level
    past the first whose receptive field covers the typical object; between 2 and 5 levels."""
    by_patch = max(2, min(5, int(math.log2(min(patch) / 8))))
    by_objects = next((d for d in range(1, 8) if receptive_field(d) >= object_side), 7) + 1
    depth = max(2, min(by_patch, max(3, by_objects)))
    why = (
        f"{min(patch)} px patch allows {by_patch} poolings (deepest map >= 8 px); objects of {object_side:.0f} px "
        f"are seen whole at depth {by_objects - 1} (receptive field {receptive_field(by_objects - 1)} px), "
        "one more for context"
    )
    return depth, why


NORM_MIN_BATCH = 8  # crops a step from which BatchNorm's batch statistics are trusted on sparse masks
SPARSE_SHARE = 0.95  # one class covering this share of the labelled pixels makes most crops mostly that class


def decide_norm(batch: int, classes: dict) -> Decision:
    """InstanceNorm for the plain U-Net where one class covers ``SPARSE_SHARE`` of the labelled pixels (a
    sparse foreground) and a step holds fewer than ``NORM_MIN_BATCH`` crops (the CPU's batch of 4);
    BatchNorm otherwise.

    BatchNorm trains on each batch's statistics and predicts with their running average. When the
    foreground is sparse, a few crops' statistics swing with whether they caught any of it, and the network
    predicts with statistics no batch had. InstanceNorm normalises each crop by its own statistics, in
    training and prediction alike (nnU-Net uses it for its batches of 2), at the cost of a slower step on
    the CPU, which the probe measures. Measured (benchmarks/README.md, 5 CPU minutes, batch 4): on a nuclei
    folder whose nuclei cover 1.4 % of the pixels, BatchNorm's final weights scored a foreground IoU of
    0.26 ± 0.05 (3 seeds) and InstanceNorm's 0.70 ± 0.02 (the folder the rule was chosen on); on another draw
    of that folder BatchNorm typed over the plan scored 0.50, 0.60 and 0.58 (seeds 42, 7, 3; seed 3 at 16
    channels) where InstanceNorm scored 0.61, 0.70 and 0.61–0.66 (8 channels). Where the largest class is
    not dominant InstanceNorm lost: nuclei covering 13 % (0.70 against 0.79, seed 42) and CamVid, whose rare
    classes are small parts of full scenes (val mIoU 0.22 against 0.35 ± 0.02, seed 42).
    The threshold sits between 87 % and 98.6 %, the two folders measured; at 95 % it is, for two classes,
    the rare-class test of :func:`rare_classes`. A step of one image has no batch statistics at all."""
    if batch == 1:  # whole images of different sizes, or a typed batch of 1 (the task refuses BatchNorm there)
        return Decision("model.norm", "instance", "a step holds 1 sample: no batch statistics, per-sample ones")
    largest = max(s["pixel_share"] for s in classes.values())
    share = f"the largest class covers {100 * largest:.1f} % of the pixels"
    if largest >= SPARSE_SHARE and batch < NORM_MIN_BATCH:
        return Decision("model.norm", "instance", f"{share} and a step holds {batch} crops: per-crop statistics")
    why = f"a step holds {batch} crops" if largest >= SPARSE_SHARE else share
    return Decision("model.norm", "batch", f"{why}: batch statistics are stable")


RARE_SHARE = 0.1  # a class is rare under this fraction of its uniform pixel share 1/K


def rare_classes(classes: dict, num_classes: int) -> list[int]:
    """The classes whose pixel share is under ``RARE_SHARE`` of the uniform share ``1 / num_classes``."""
    return [c for c, s in classes.items() if s["pixel_share"] < RARE_SHARE / num_classes]


def decide_loss(classes: dict, num_classes: int, names: Sequence[str] | None = None) -> list[Decision]:
    """Dice + CE always; square-root median-frequency class weights only when a class is rare (under a tenth
    of its uniform share 1/K), since they cost the frequent classes when nothing is rare. Class 0 stays out
    of the Dice term, as in nnU-Net: counting CamVid's sky in it (17 % of the pixels) did not help (30 CPU
    minutes: val mIoU 0.466 against 0.479, one seed). Two classes keep two softmax channels: binary mode (one
    sigmoid, ``model.num_classes=1``) lost ISBI's pixel error on each of three seeds (0.0792 against 0.0777
    at 5 CPU minutes) and tied the nuclei stand-in's pooled IoU (0.759 +- 0.017 against 0.748 +- 0.020)."""
    shares = {c: s["pixel_share"] for c, s in classes.items()}
    rare = rare_classes(classes, num_classes)
    decisions = [Decision("loss", "dice_ce", "Dice + cross-entropy: robust to imbalance, smooth early on")]
    if rare:
        listed = ", ".join(f"{names[c] if names else f'class {c}'} ({100 * shares[c]:.2f} %)" for c in rare)
        decisions.append(Decision("task.loss.class_weights", "sqrt_median_frequency", f"rare: {listed}"))
    else:
        smallest = min(shares.values())
        decisions.append(Decision("task.loss.class_weights", None, f"no rare class (smallest {100 * smallest:.1f} %)"))
    return decisions


def decide_schedule(classes: dict, num_classes: int) -> Decision:
    """Both schedules anneal over the budget (steps or ``trainer.max_time``); they differ late in the run,
    where poly (power 0.9, nearly linear) still has 0.13 of the peak learning rate at 90 % of the budget and
    cosine 0.02. That late learning pays where rare classes are still being learned, and costs a little
    where none are. Measured on 2 CPU cores, final weights (``benchmarks/README.md``): CamVid (rare
    pedestrian and bicyclist) val mIoU 0.397 poly against 0.383 cosine at 10 minutes (3 seeds, poly ahead on
    each), 0.531 against 0.478 at 30 (1 seed; the plan with this rule 0.520, the hand recipe 0.519); ISBI
    (membrane 22 % of two classes) pixel error 0.0794 poly against 0.0784 cosine at 5 minutes (3 seeds,
    +-0.0009), 0.0771 against 0.0766 at 30 (1 seed). The step count does not separate them: ISBI's 30-minute
    run (1351 steps) is longer than CamVid's 10-minute ones (~1200). A binary folder with a rare foreground
    gets poly by the same reason, unmeasured."""
    rare = rare_classes(classes, num_classes)
    if rare:
        return Decision("scheduler", "poly", f"{len(rare)} rare class(es): still learning late in the budget")
    return Decision("scheduler", "cosine", "no rare class: cosine decay over the budget (steps or max_time)")


# Adam moves each weight by about the rate whatever the layer's fan-in, and under BatchNorm a filter of
# 9 x C weights turns by about rate x sqrt(9 x C) a step: one rate turns a wider network's filters further.
LR_WIDTH = 16  # base channels up to which a CPU plan keeps the configured rate
LR_MIN_STEPS = 1200  # planned steps from which a wider plan's lower rate was measured to pay


def decide_learning_rate(rate: float, device: str, width: int | str, planned_steps: float) -> Decision:
    """The optimizer's rate: ``rate`` (the task's, AdamW's 0.001) x ``LR_WIDTH`` / width for a plain U-Net
    the plan made wider than ``LR_WIDTH`` channels on the CPU with ``LR_MIN_STEPS`` planned steps or more;
    ``rate`` otherwise. ``width``: the plan's base channels, an encoder's name or the user's network.

    Measured at 32 channels on 2 CPU cores, final weights (``benchmarks/README.md``). On the nuclei stand-in, at
    1200 steps (seeds 42 and 7) and with the 30-minute plan (seed 42, ~3900 steps) on two draws, half the rate
    fitted the training crops better in 6 of 6 pairs and scored a higher pooled IoU in 5 of 6 (+0.038 and +0.005 at
    30 minutes); the 30-minute plan with bf16's ~10000 steps (seed 7) fitted better on both draws, tied on draw 0
    (0.817 against 0.825) and won on draw 1 (0.798 against 0.763); 48 channels at a third of it rose from 0.565 to
    0.706 at 1200 steps. A lower rate needs steps to pay: on ISBI, 32 channels typed for 30 minutes made ~465 steps,
    and there half the rate fitted worse (training loss 0.446 against 0.428), tied the pixel error (0.0794) and lost
    the adapted Rand error (0.145 against 0.112); at the floor, the bf16 CPU's 30-minute ISBI plan (~1300 steps),
    the two rates tied (pixel error 0.0765 against 0.0764, seed 42), half the rate level in training loss from ~650
    steps and ahead after ~950. 16 channels at 0.0003 lost (0.613 against 0.626 at 1200 steps), so narrower plans
    keep the rate. Not measured on a GPU, whose plans keep it, nor for the ResNet-34 encoder (its CamVid figures are
    at 0.001)."""
    if device != "cpu":
        kept = "the width rule is not measured on a GPU"
    elif not isinstance(width, int):
        kept = f"the width rule is for the plan's U-Nets, not {width}"
    elif width <= LR_WIDTH:
        kept = f"{width} channels (<= {LR_WIDTH})"
    elif planned_steps < LR_MIN_STEPS:
        kept = f"~{planned_steps:.0f} steps (< {LR_MIN_STEPS}), too few for a lower one"
    else:
        kept = None
    if kept:
        return Decision("task.optimizer.lr", rate, f"the configured rate: {kept}")
    scaled = float(f"{rate * LR_WIDTH / width:.3g}")
    return Decision(
        "task.optimizer.lr",
        scaled,
        f"{rate:g} x {LR_WIDTH} / {width} channels: one rate turns wider filters further (half the rate fitted "
        f"better in 8 of 8 pairs at 32 channels and >= {LR_MIN_STEPS} steps on a CPU, scored higher in 6)",
    )


def decide_augmentation(
    color_mode: str, planned_steps: float, upright: str | None = None, sided: str | None = None
) -> Decision:
    """Grey images (microscopy, EM): flips, 90-degree rotations, elastic, grey-value jitter; colour images:
    left-right flips, scale and rotation, colour jitter. With very few steps only flips (nothing to gain from
    harder samples the network cannot fit yet). ``upright``: why the images have an up (:func:`upright`);
    then vertical flips and 90-degree rotations would show the network skies below roads, so grey images
    get the colour family's pipeline (left-right flips only) and few steps get ``hflip``. ``sided``: why the
    images have a left and a right (:func:`sided`, as the left and right lung); then a mirror would paint a
    left-side structure on the right under its left-side label, so no pipeline mirrors or rotates by 90
    degrees: ``sided`` (scale, small rotations, jitter), or ``none`` with few steps
    (``benchmarks/sided_layout.py``: two blobs alike but for their side).

    Colour images with no up (stained microscopy, aerial views) get flips in both axes and nothing more
    (``light``): on both draws of the nuclei stand-in at 5 CPU minutes (16 channels, three seeds each) it led
    ``strong`` by about a seed's spread pooled and by 0.02-0.03 per image, and a rare foreground did not ask
    for more. What was screened and lost or tied (vertical flips in ``strong``, the CamVid recipe's pipeline,
    inverted grey levels, ``strong`` at 30 minutes) is in ``benchmarks/README.md``, under "Test-time flips
    from the data's symmetry", "The planner against the hand recipe", "Inverted grey levels for folders that
    mix light and dark nuclei", "The expert's parts separated on the nuclei stand-in", "The rare-foreground
    folder, three seeds" and "The nuclei stand-in against its own ceiling"."""
    if sided:
        if planned_steps < 300:
            return Decision("aug", "none", f"only ~{planned_steps:.0f} steps in the budget, {sided}: no mirrors")
        return Decision("aug", "sided", f"{sided}: no mirrors (they would swap the sides' classes); "
                        "scale/rotation, colour/grey jitter")  # fmt: skip
    if planned_steps < 300:
        if upright:
            return Decision("aug", "hflip", f"only ~{planned_steps:.0f} steps in the budget, {upright}: mirrors only")
        return Decision("aug", "light", f"only ~{planned_steps:.0f} steps in the budget: flips only")
    if upright:
        return Decision("aug", "strong", f"{upright}: left-right mirrors, scale/rotation, colour/grey jitter")
    if color_mode == "gray":
        return Decision("aug", "em", "grey images: flips, rot90, elastic, brightness/contrast")
    return Decision("aug", "light", "colour images with no up (microscopy, aerial): flips in both axes")


# A class with at least MIN_SHARE of the pixels and more than this share of them in one half (top or bottom,
# left or right) gives the images that direction. Measured on the training masks: CamVid's sky lies 99.6 % in
# the top half and its road 100 % in the bottom; its most one-sided class left-right is the pavement, 67 % on
# the left (traffic drives on the left), which left-right mirrors still suit; ISBI's membranes and the nuclei
# stand-in's classes split 47-51 % each way.
ORIENTED_SHARE = 0.75
MIN_SHARE = 0.01


def one_sided(classes: dict, first: str, second: str) -> list[tuple[int, float, str]]:
    """The classes whose pixels lie mostly in one of two opposite halves: (class, its share there, the half)."""
    found = []
    for c, s in classes.items():
        a, b = s["halves"][first], s["halves"][second]
        if s["pixel_share"] >= MIN_SHARE and a + b and max(a, b) / (a + b) > ORIENTED_SHARE:
            found.append((c, max(a, b) / (a + b), first if a > b else second))
    return found


def _where(found: list[tuple[int, float, str]], names: Sequence[str] | None) -> str:
    c, share, half = found[0]
    return f"{names[c] if names and c < len(names) else f'class {c}'} lies {share:.0%} in the {half} half"


def upright(classes: dict, names: Sequence[str] | None = None) -> str | None:
    """Why the images have an up (a class lying mostly in the top or bottom half), or ``None``."""
    vertical = one_sided(classes, "top", "bottom")
    return _where(vertical, names) if vertical else None


def sided(classes: dict, names: Sequence[str] | None = None) -> str | None:
    """Why the images have a left and a right (a class lying mostly in one of those halves), or ``None``."""
    horizontal = one_sided(classes, "left", "right")
    return _where(horizontal, names) if horizontal else None


def decide_tta(classes: dict, names: Sequence[str] | None = None, topology: bool = False) -> Decision:
    """Test-time augmentation for predict/eval/serve: the flips under which the labels' layout is the same.
    Averaging the logits of the flipped images is nnU-Net's default (mirroring); on the nuclei stand-in it
    gained 0.007-0.023 pooled foreground IoU (0.002-0.019 per image) over a plain pass in each of eight 5-minute
    runs (two draws of the folder, two seeds, two augmentation pipelines).
    Images with an up (a class mostly in the top or bottom half) are mirrored left-right only: on CamVid
    (5-minute plan, seed 42) the mirror raised val mIoU from 0.330 to 0.336, the 4 flips dropped it to 0.269.
    Images with a left and a right are not flipped. Each flip is one more forward pass at prediction time.

    ``topology``: the run scores how objects connect (adapted Rand error). Averaged flips blur faint, thin
    boundaries: on ISBI (5-minute plan, seed 42) they improved the pixel error (0.0780 -> 0.0770) but broke
    membranes, and the adapted Rand error rose from 0.114 to 0.151, so such runs predict in one pass."""
    if topology:
        return Decision("task.tta", None, "the run scores topology (adapted Rand error), which averaged flips "
                        "hurt on ISBI (0.114 -> 0.151): one pass")  # fmt: skip
    left_right, up = sided(classes, names), upright(classes, names)
    if left_right:  # rare (a layout with a left and a right); not worth a mode of its own
        return Decision("task.tta", None, f"{left_right}: the images have a left and a right, no flips")
    if up:
        return Decision("task.tta", "hflip", f"{up}: the images have an up, so predictions average the image "
                        "and its mirror (2 passes)")  # fmt: skip
    return Decision("task.tta", "flips", "every class spreads evenly over the image halves: predictions "
                    "average the 4 flips (4 passes; validation during training uses 1)")  # fmt: skip


CACHE_BYTES = 2**30  # one copy, shared by forked loader workers (spawned ones, as on macOS, each hold one)


def decide_cache(fp: dict, in_channels: int) -> Decision:
    """Hold the decoded training split in memory when a copy fits in ``CACHE_BYTES``.

    Each training crop otherwise decodes its whole image: on the 2-core CPU a 48-image nuclei folder (0.2 M
    pixels an image on average, up to 1.4 M; ``benchmarks/unseen_folder.py``) spent ~8 ms decoding a sample,
    30 ms a batch of 4, beside a 46 ms training step, and made ~60 % of the steps its probe promised: 3286
    steps in 5 minutes without the cache, 4512 with it (3 seeds each)."""
    itemsize = 1 if all(d == "uint8" for d in fp["dtypes"]) else 4  # 16-bit and float images: float32
    size = fp["pixels"] * (in_channels * itemsize + 1)  # and a uint8 mask
    if size <= CACHE_BYTES:
        why = f"the decoded training split ({size / 2**20:.0f} MiB) fits in memory: decoded once, not every crop"
        return Decision("data.train_dataset.cache", True, why)
    why = f"the decoded training split ({size / 2**30:.1f} GiB) is over {CACHE_BYTES / 2**30:.0f} GiB: read every crop"
    return Decision("data.train_dataset.cache", False, why)


def decide_batch(device: str, batch: int, peak_bytes: int | None, total_bytes: int | None) -> tuple[int, str]:
    """CPU: ``BATCH["cpu"]`` (on few cores a step's time grows with the batch, so smaller batches give more
    updates for the same pixels). GPU: ``BATCH["cuda"]``, halved (to 2 at least) while the probe's peak memory,
    scaled to the batch, exceeds ``MEMORY_SHARE`` of the device's."""
    if device != "cuda" or not peak_bytes or not total_bytes:
        return batch, "CPU: more, smaller steps beat bigger batches on few cores"
    probed = batch
    while batch > 2 and peak_bytes * batch / probed > MEMORY_SHARE * total_bytes:
        batch //= 2
    gib = 2**30
    return batch, (
        f"probe peak {peak_bytes / gib:.1f} GiB at batch {probed} of {total_bytes / gib:.0f} GiB: "
        + ("fits" if batch == probed else f"halved to {batch}")
    )


TRAINING_SHARE = 0.85  # of the budget left for optimizer steps: the rest goes to validations and start-up


# ``planner.min_steps`` and ``planner.min_pixels`` when a config leaves them out; +experiment=auto states both
# (tests/test_planning.py checks they agree).
MIN_STEPS = 700
MIN_PIXELS = 120e6
# planner.min_steps (700) is the floor up to this budget (~14 minutes); it grows beyond. Where the floor was
# 600 up to 10 minutes, this keeps every floor past ~14 minutes as it was (~1040 at 30 minutes).
STEP_FLOOR_BUDGET_SECONDS = 820


def step_floor(min_steps: int, budget_seconds: float) -> int:
    """The width rule's step floor for a budget: ``min_steps`` up to ``STEP_FLOOR_BUDGET_SECONDS``, then
    growing with the square root of the budget, so that a longer budget buys width and steps together (as
    compute-optimal scaling splits compute between model size and data) instead of width alone.

    Measured on 2 CPU cores (benchmarks/README.md), final weights:
    - where a wider network ties a narrower one: ISBI, 16 channels with ~700 steps against 8 with ~1000;
      CamVid at 5 minutes, 16 channels with 662-685 steps (val mIoU 0.336 +- 0.020, 3 seeds) against 8 with
      ~1060 (0.340 +- 0.006). Below it the wider one loses: CamVid, 16 channels planned at ~618 steps (over
      the old 600 floor) made 541-552 and scored 0.286 where 8 channels scored 0.347 (seed 42, the same hour).
      Plans make fewer steps than promised when the loader shares the cores (CamVid: 88-89 %), so the floor
      sits at the tie, 700, not under it;
    - with the floor fixed at 600, CamVid at 30 CPU minutes took 48 channels for 646 steps and scored below
      16 channels' 10-minute run; ISBI at 30 minutes sat on the edge between 32 channels (~1270 steps, the
      measured plan) and 48 (~600). At 30 minutes the floor is ~1040: 32 channels, not 48."""
    return round(min_steps * max(1.0, math.sqrt(budget_seconds / STEP_FLOOR_BUDGET_SECONDS)))


# At a CPU budget up to SHORT_BUDGET_SECONDS a wider network is taken only when its step costs at most
# SHORT_BUDGET_SLOWDOWN x the next narrower one's, i.e. when it keeps two thirds of the steps
SHORT_BUDGET_SLOWDOWN = 1.5
SHORT_BUDGET_SECONDS = 600


def short_budget_slowdown(device: str, budget_seconds: float) -> float:
    """The most a wider network's step may cost over the next narrower one's: ``SHORT_BUDGET_SLOWDOWN`` on
    the CPU up to ``SHORT_BUDGET_SECONDS`` (10 minutes), unbounded elsewhere: past 10 minutes and on a GPU
    the floors alone decide. At 30 minutes 16 channels did no better than 32 on the nuclei stand-in (pooled
    0.742 and 0.743 against 0.779 and 0.759 on the draw where 32 lost at 10 minutes, a tie on the other), so
    the cap does not reach further.

    Measured at 10 CPU minutes on the AMX-BF16 CPU (benchmarks/README.md), final weights, three seeds a
    side, 32 channels (the plan without the cap: 2.1x 16's step on the nuclei stand-in, 2.4-2.7x on ISBI)
    against 16: pooled foreground IoU 0.821 +- 0.006 against 0.826 +- 0.010 on one draw of the stand-in,
    0.706 +- 0.064 against 0.770 +- 0.009 on the other (32 forgot the large `val_000`, and scored below the
    5-minute plan); on ISBI a tie leaning to 16 (pixel error 0.0780 +- 0.0006 against 0.0769 +- 0.0007).
    CamVid at 10 minutes plans ResNet-34 on that CPU, which the cap does not touch. On a CPU without bf16
    kernels (AVX2 emulated on that one) the cap takes 8 channels over 16 on the stand-in at 10 minutes, and
    the two tied over three seeds a draw (0.780 +- 0.009 against 0.780 +- 0.021); ISBI and CamVid plan 8
    channels there on the floors alone.

    Measured at 5 CPU minutes (benchmarks/README.md), final weights, three seeds a side: on the nuclei
    stand-in on the AMX-BF16 CPU, 32 channels (2.06x 16 channels' step, ~3500 steps, both floors cleared)
    scored 0.793 pooled foreground IoU on the draw rules are screened on, 16 channels (~6800 steps) 0.804;
    on the other draw 0.741 against 0.771.
    Where the cap moves a plan from 16 to 8 channels, the two were measured to tie: ISBI (16 channels with
    ~700 steps against 8 with ~1000), CamVid (0.336 +- 0.020 against 0.340 +- 0.006) and the stand-in on the
    AVX2 CPU (three seeds on each draw). Unmeasured on a GPU."""
    return SHORT_BUDGET_SLOWDOWN if device == "cpu" and budget_seconds <= SHORT_BUDGET_SECONDS else math.inf


@dataclass(frozen=True)
class Floors:
    """What a network must get in 85 % of ``budget_seconds`` (the rest: start-up, loading, validation):
    ``min_steps`` optimizer steps and ``min_pixels`` training pixels, counted as steps x ``pixels_per_step``
    (batch x patch area). :func:`choose_width` takes the widest network that meets both, among the widths
    whose step costs at most ``max_slowdown`` x the next narrower one's. Only :func:`short_budget_slowdown`
    sets ``max_slowdown`` finite (a short CPU budget), and :func:`choose_width`'s reason says so."""

    budget_seconds: float
    min_steps: int
    pixels_per_step: int = 0
    min_pixels: float = 0.0
    max_slowdown: float = math.inf

    @classmethod
    def planned(cls, settings, budget_seconds: float, pixels_per_step: int, device: str) -> Floors:
        """The floors of a plan: ``planner.min_steps`` (grown for long budgets, :func:`step_floor`) and
        ``planner.min_pixels`` from ``settings``; the device's :func:`short_budget_slowdown`."""
        min_steps = step_floor(int(settings.get("min_steps", MIN_STEPS)), budget_seconds)
        min_pixels = float(settings.get("min_pixels", MIN_PIXELS))
        slowdown = short_budget_slowdown(device, budget_seconds)
        return cls(budget_seconds, min_steps, pixels_per_step, min_pixels, slowdown)

    def steps(self, step_seconds: float) -> float:
        return TRAINING_SHARE * self.budget_seconds / step_seconds

    def met_by(self, step_seconds: float) -> bool:
        """Whether a network of this step time gets both floors in the budget."""
        steps = self.steps(step_seconds)
        return steps >= self.min_steps and steps * self.pixels_per_step >= self.min_pixels

    def slowest_step(self) -> float:
        """The longest step time that still meets both floors."""
        pixel_steps = self.min_pixels / self.pixels_per_step if self.pixels_per_step else 0.0
        return TRAINING_SHARE * self.budget_seconds / max(self.min_steps, pixel_steps)

    def __str__(self) -> str:
        return f">= {self.min_steps} steps" + (f" and {self.min_pixels / 1e6:.0f} M pixels" if self.min_pixels else "")


WIDER_SLOWDOWN = 1.15  # a width's step time over the next narrower one's, past the first: at least 1.19x here


SLOPE_KEPT = 0.75  # the share of the narrower widths' slope the bound extends past them (see below)


def next_width_bound(timings: dict[int, float], width: int) -> float:
    """A lower bound on the step time of ``width`` from the two widest probed widths below it, ``a < b``:
    ``t(b) + SLOPE_KEPT * (width - b) / (b - a) * (t(b) - t(a))``, and at least ``WIDER_SLOWDOWN`` x ``t(b)``.

    A step's work is a constant plus terms linear (norms, activations, the first and last convs) and
    quadratic (every inner conv: channels in x channels out) in the width, so its time is a convex function
    of the width and grows at least as fast past ``b`` as it did from ``a`` to ``b``: from 8 to 16 to 32
    channels, ``t(32) >= 3 t(16) - 2 t(8)``. On the 2-core AVX2 CPU (fp32, benchmarks/width_step_times.py)
    32 channels took 1.5-2.3x that at 64² to 512² crops. Where a step is mostly fixed overhead (32² crops,
    ~10-20 ms) one reading came to 0.95x of it, and widths that do not fill the CPU's vectors break the
    assumption (16 channels took 0.89-0.95x the bound from 8 and 12; the planner's widths double). So the
    bound keeps three quarters of the slope (``SLOPE_KEPT``): ``t(32) >= 2.5 t(16) - 1.5 t(8)``, which every
    doubling measured cleared by 1.03x or more (1.7-2.7x past 64² crops). Where 8 and 16 read alike (16 ->
    32 was seen as little as 1.19x on a bf16 CPU), the ``WIDER_SLOWDOWN`` floor is the bound."""
    a, b = slope_widths(timings, width)
    slope = (timings[b] - timings[a]) / (b - a)
    return max(WIDER_SLOWDOWN * timings[b], timings[b] + SLOPE_KEPT * (width - b) * slope)


def slope_widths(timings: dict[int, float], width: int) -> tuple[int, int]:
    """The two widest probed widths below ``width``, ``a < b``: the ones :func:`next_width_bound` draws on."""
    a, b = sorted(w for w in timings if isinstance(w, int) and w < width)[-2:]
    return a, b


def quickest_step(narrower: int, wider: int, wider_seconds: float) -> float:
    """A lower bound on the step time of ``narrower`` from that of ``wider``: a step is a constant plus terms
    linear and quadratic in the width, none negative, so ``t(a) >= (a/b)^2 t(b)``."""
    return (narrower / wider) ** 2 * wider_seconds


def worth_probing(timings: dict[int, float], width: int, floors: Floors) -> bool:
    """Whether ``width`` could still clear the floors, judged from the widths probed below it: the first two
    are always probed (16 was seen as fast as 0.84x 8 channels); past them, whether even
    :func:`next_width_bound` meets the floors. Probing 32 channels on CamVid at 30 minutes (3.6 s a step
    where the floors allow 1.5 s) cost 16.5 of 37 s of planning, and 48 after a 32 that cleared by under 15 %
    cost 12-15 s; neither could win."""
    if sum(1 for w in timings if isinstance(w, int) and w < width) < 2:
        return True
    return floors.met_by(next_width_bound(timings, width))


def choose_width(
    timings: dict[int, float], floors: Floors, compared: dict[int, float] | None = None
) -> tuple[int, str]:
    """The widest network (``base_channels``) whose probed step time meets the :class:`Floors` (enough
    optimizer steps and training pixels in the budget); the narrowest when none does. At a short CPU budget
    the widths stop at the first whose step costs over ``floors.max_slowdown`` x the next narrower one's, by
    the ``compared`` step times (the planner's: each width's fastest reading; default ``timings``).

    Both floors come from measurements (benchmarks/README.md): on ISBI (512² slices, 256² crops x 4) a
    16-channel network with ~700 steps (~180 M pixels) ties an 8-channel one with ~1000; on 96² colour
    shapes a 48-channel network got 1200 steps (44 M pixels) and reached val mIoU 0.35 where 16 channels
    with 4800 steps (180 M pixels) reached 0.66. Small images give few pixels a step, so the step count
    alone let the planner pick a network it could not train in the budget. Its known miss, CamVid at 30 CPU
    minutes (48 channels got 646 steps and scored below 16 channels' 10-minute run), is why
    :func:`choose_encoder` runs first: where it takes ResNet-34, this rule is not asked."""
    compared = timings if compared is None else compared
    kept, dropped = within_slowdown(compared, floors.max_slowdown)
    fits = [w for w in kept if floors.met_by(timings[w])]
    width = max(fits) if fits else min(timings)
    measured = ", ".join(f"{w}: {t * 1000:.0f} ms" for w, t in sorted(timings.items()))
    steps = floors.steps(timings[width])
    seen = f", {steps * floors.pixels_per_step / 1e6:.0f} M pixels" if floors.pixels_per_step else ""
    why = f"probed step times ({measured}); widest with {floors} in the budget: ~{steps:.0f} steps{seen}"
    if not fits:
        why = f"no width reaches {floors} ({measured}); the narrowest gets ~{steps:.0f} steps{seen}"
    elif dropped and floors.met_by(timings[dropped]):
        ratio = compared[dropped] / compared[max(kept)]
        why += (f"; not {dropped}: {ratio:.2f}x {max(kept)}'s step, over the {floors.max_slowdown:g}x a wider "
                "network may cost at a short CPU budget")  # fmt: skip
    return width, why


def within_slowdown(timings: dict[int, float], max_slowdown: float) -> tuple[list[int], int | None]:
    """The widths, narrowest first, up to the first whose step costs over ``max_slowdown`` x the next
    narrower one's (none of the wider ones are weighed either), and that first width (``None`` if none)."""
    kept: list[int] = []
    for width, seconds in sorted(timings.items()):
        if kept and seconds > max_slowdown * timings[kept[-1]]:
            return kept, width
        kept.append(width)
    return kept, None


# The one larger network the planner weighs against its plain U-Net: U-Net-ResNet-34 from scratch with a
# bilinear decoder (the CamVid hand recipe's). Its stem and max-pool downsample 4x before any 3x3 conv, so
# it holds 24 M parameters at about the step time of a 16-32-channel plain U-Net on 256² crops.
ENCODER = "resnet34"
ENCODER_DEPTH = 5  # its stride-2 stages: plans whose patch or objects ask for fewer keep the plain U-Net
ENCODER_MIN_STEPS = 1200
ENCODER_MIN_DATA_PIXELS = 20e6  # training images x median area: ISBI's 24 slices (6.3 M) gained nothing
ENCODER_SLOWDOWN = 1.4  # its step over the narrowest U-Net's (same patch and batch): at least 1.47x here


def training_pixels(fp: dict) -> float:
    """The training split's size in pixels: images x the median image area (from the fingerprint)."""
    return fp["images"] * fp["height"]["median"] * fp["width"]["median"]


def encoder_eligible(depth: int, data_pixels: float) -> str | None:
    """Why the plan cannot use the encoder whatever its step time (``None`` when it can)."""
    if depth < ENCODER_DEPTH:
        return f"a depth-{depth} plan, and the encoder downsamples {2**ENCODER_DEPTH}x"
    if data_pixels < ENCODER_MIN_DATA_PIXELS:
        floor = ENCODER_MIN_DATA_PIXELS / 1e6
        return f"{data_pixels / 1e6:.1f} M training pixels (< {floor:.0f} M): too little data for its capacity"
    return None


def encoder_slowdown(name: str) -> float:
    """The least step-time ratio of encoder ``name`` to the narrowest U-Net: measured for ``ENCODER`` only."""
    return ENCODER_SLOWDOWN if name == ENCODER else 1.0


def worth_probing_encoder(narrowest_seconds: float, budget_seconds: float, name: str = ENCODER) -> bool:
    """Whether the encoder could get ``ENCODER_MIN_STEPS`` steps, given the narrowest U-Net's step time:
    ResNet-34 (``ENCODER``) is at least ``ENCODER_SLOWDOWN`` x slower a step; another ``planner.encoder``, not
    measured, at least as slow. On 2 CPU cores (256² crops x 4, bf16) ResNet-34 read 1.47-5x the 8-channel
    U-Net's step over 55 CamVid plans (1.86-6.1x in the 36 whose fingerprints are kept). Its probe (a warm-up
    and timed steps at 1-1.5 s each, read twice when it clears) cost ~6 s of planning CamVid at 10 minutes,
    where it never cleared its floor."""
    return encoder_trains_enough(narrowest_seconds * encoder_slowdown(name), budget_seconds)


def encoder_floors(budget_seconds: float) -> Floors:
    """What an encoder must get in the budget: ``ENCODER_MIN_STEPS`` optimizer steps (see :func:`choose_encoder`)."""
    return Floors(budget_seconds, ENCODER_MIN_STEPS)


def encoder_trains_enough(step_seconds: float, budget_seconds: float) -> bool:
    return encoder_floors(budget_seconds).met_by(step_seconds)


def choose_encoder(
    depth: int, step_seconds: float | None, budget_seconds: float, name: str = ENCODER, data_pixels: float = math.inf
) -> tuple[str, str]:
    """The encoder ``name`` (``planner.encoder``, ``ENCODER`` by default) when the plan's depth allows its 5
    downsamplings, the training split holds ``ENCODER_MIN_DATA_PIXELS`` and the probed step time gives it
    ``ENCODER_MIN_STEPS`` optimizer steps in 85 % of the budget; else ``"unet"`` (segkit's plain U-Net, whose
    width :func:`choose_width` sets). ``step_seconds`` is ``None`` when the encoder was not probed.

    The floor comes from measurements (benchmarks/README.md), all from scratch on 2 CPU cores: with ~480
    steps ResNet-34 lost to a 16-channel plain U-Net with ~1370 (CamVid, 10 minutes: val mIoU 0.378 vs
    0.407), and on ISBI it lost at ~490 steps and tied at ~1840 (smp's, the peer); with 1413 steps it beat
    the widest plain U-Net the width rule could give (CamVid, 30 minutes: 0.519 vs 0.384 for 48 channels
    with 646 steps). Capacity pays once there are steps to fit it; below the floor steps matter more. It also
    needs data: on ISBI (24 slices of 512², 6.3 M pixels) at 30 minutes it got 2530 steps and lost to the
    32-channel plain U-Net with 1374 (membrane IoU 0.677 vs 0.685, adapted Rand error 0.147 vs 0.115);
    CamVid has 63 M. Two datasets place that floor, so it is coarse: 20 M, between them."""
    excluded = encoder_eligible(depth, data_pixels)
    if excluded:
        return "unet", f"not {name}: {excluded}"
    if step_seconds is None:
        return "unet", (
            f"not probed: at {encoder_slowdown(name):g}x the narrowest U-Net's step time (the least seen), "
            f"{name} would get under {ENCODER_MIN_STEPS} steps"
        )
    floors = encoder_floors(budget_seconds)
    probed = f"{name} (from scratch, {step_seconds * 1000:.0f} ms a step) gets ~{floors.steps(step_seconds):.0f} steps"
    if floors.met_by(step_seconds):
        return name, f"{probed} >= {ENCODER_MIN_STEPS}: more capacity per second than a wider plain U-Net"
    return "unet", f"{probed} < {ENCODER_MIN_STEPS}: the plain U-Net's extra steps matter more"


def validation_interval(val_seconds: float, step_seconds: float, budget_seconds: float) -> tuple[int, str]:
    """Optimizer steps between validations so that validating costs at most ``VAL_SHARE`` of the wall time
    (at least ``MIN_INTERVAL`` steps). Raises when the budget cannot hold even one validation besides training."""
    cost = val_seconds + VAL_OVERHEAD_SECONDS
    if cost > 0.5 * budget_seconds:
        raise ValueError(
            f"the budget ({budget_seconds:.0f} s) is too short: one validation pass alone takes about "
            f"{cost:.0f} s; give a longer trainer.max_time or a smaller validation split"
        )
    steps = max(MIN_INTERVAL, math.ceil((1 - VAL_SHARE) / VAL_SHARE * cost / step_seconds))
    return steps, (
        f"a validation takes ~{cost:.1f} s with its checkpoints, a step ~{step_seconds * 1000:.0f} ms: "
        f"<= {100 * VAL_SHARE:.0f} % of the time"
    )
