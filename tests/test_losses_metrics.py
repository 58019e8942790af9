"""Losses and scores against hand-computed numbers, ignored pixels and absent classes included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
from skimage.measure import label
from skimage.metrics import adapted_rand_error as skimage_are

from segkit.losses import BCELoss, CrossEntropyLoss, DiceCELoss, DiceLoss, WeightMapCrossEntropyLoss
from segkit.metrics import (
    dice_per_class,
    iou_per_class,
    pixel_accuracy,
    precision_per_class,
    recall_per_class,
    segmentation_scores,
)
from segkit.metrics.per_image import ImageMetricMean, adapted_rand_error, hausdorff95


def test_scores_from_a_hand_made_confusion_matrix() -> None:
    # rows = target, cols = prediction; class 2 never occurs in target or prediction
    cm = torch.tensor([[3, 1, 0], [2, 4, 0], [0, 0, 0]])
    iou = iou_per_class(cm)
    assert iou[0].item() == pytest.approx(3 / (3 + 1 + 2))
    assert iou[1].item() == pytest.approx(4 / (4 + 2 + 1))
    assert math.isnan(iou[2].item())
    dice = dice_per_class(cm)
    assert dice[1].item() == pytest.approx(2 * 4 / (2 * 4 + 2 + 1))
    assert pixel_accuracy(cm).item() == pytest.approx(7 / 10)
    scores = segmentation_scores(cm, ["a", "b", "c"], "val")
    assert scores["val/miou"] == pytest.approx((3 / 6 + 4 / 7) / 2)  # the absent class is left out
    assert scores["val/pixel_error"] == pytest.approx(0.3)


def _logits_for(pred: torch.Tensor, num_classes: int, scale: float = 20.0) -> torch.Tensor:
    return torch.nn.functional.one_hot(pred, num_classes).permute(0, 3, 1, 2).float() * scale


def test_dice_loss_is_zero_for_a_perfect_prediction_and_ignores_void_pixels() -> None:
    target = torch.tensor([[[0, 1], [1, 255]]])
    pred = torch.tensor([[[0, 1], [1, 0]]])  # wrong only where the target is ignored
    assert DiceLoss(ignore_index=255, smooth=0.0)(_logits_for(pred, 2), target).item() == pytest.approx(0, abs=1e-6)


def test_dice_loss_matches_hand_computation() -> None:
    target = torch.tensor([[[0, 0], [1, 1]]])
    logits = torch.zeros(1, 2, 2, 2)  # uniform probabilities 0.5
    # per class: intersection = 2 * 0.5 = 1, cardinality = 4 * 0.5 + 2 = 4 -> dice = 0.5
    assert DiceLoss(smooth=0.0)(logits, target).item() == pytest.approx(0.5)


def test_dice_ce_adds_both_terms_and_bce_masks_ignored_pixels() -> None:
    target = torch.tensor([[[0, 1], [255, 1]]])
    logits = torch.randn(1, 2, 2, 2)
    ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=255)
    expected = ce + DiceLoss(smooth=1e-5, include_background=False)(logits, target)  # nnU-Net's Dice term
    assert DiceCELoss()(logits, target).item() == pytest.approx(expected.item())
    changed = logits.clone()
    changed[0, :, 1, 0] = 100.0  # only the ignored pixel changes
    assert BCELoss()(changed, target).item() == pytest.approx(BCELoss()(logits, target).item())


ALL_LOSSES = [
    DiceLoss(),
    DiceLoss(batch_dice=False, include_background=False),
    DiceCELoss(),
    BCELoss(),
    CrossEntropyLoss(class_weights=[1.0, 2.0, 0.5], label_smoothing=0.1),
    smp.losses.FocalLoss("multiclass", ignore_index=255),
    smp.losses.TverskyLoss("multiclass", alpha=0.3, beta=0.7, smooth=1.0, ignore_index=255),
    smp.losses.LovaszLoss("multiclass", ignore_index=255),
    WeightMapCrossEntropyLoss(),
]
LOSS_IDS = ["dice", "dice_per_image_fg", "dice_ce", "bce", "ce", "focal", "tversky", "lovasz", "weight_map_ce"]


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=LOSS_IDS)
def test_losses_give_gradients(loss: torch.nn.Module) -> None:
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    target[:, 0] = 255
    loss(logits, target).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert logits.grad[:, :, 0].abs().sum() == 0  # ignored row gets no gradient


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=LOSS_IDS)
def test_ignored_pixels_never_change_a_loss(loss: torch.nn.Module) -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 6, 6)
    target = torch.randint(0, 3, (2, 6, 6))
    target[:, :2] = 255
    changed = logits.clone()
    changed[:, :, :2] = torch.randn(2, 3, 2, 6) * 50  # anything at all where the target is ignored
    assert loss(changed, target).item() == pytest.approx(loss(logits, target).item(), abs=1e-6)


def test_precision_and_recall_from_a_hand_made_confusion_matrix() -> None:
    cm = torch.tensor([[3, 1, 0], [2, 4, 0], [0, 0, 0]])  # rows = target, columns = prediction
    assert precision_per_class(cm)[:2].tolist() == pytest.approx([3 / 5, 4 / 5])  # column sums 5 and 5
    assert recall_per_class(cm)[:2].tolist() == pytest.approx([3 / 4, 4 / 6])  # row sums 4 and 6
    assert math.isnan(precision_per_class(cm)[2].item()) and math.isnan(recall_per_class(cm)[2].item())
    scores = segmentation_scores(cm, ["a", "b", "c"], "val")
    assert scores["val/precision_b"] == pytest.approx(0.8) and scores["val/recall_a"] == pytest.approx(0.75)


def test_cross_entropy_weights_and_smoothing_by_hand() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)]]).reshape(1, 2, 1, 1)  # p = [1/4, 3/4]
    target = torch.tensor([[[1]]])
    assert CrossEntropyLoss()(logits, target).item() == pytest.approx(-math.log(0.75))
    smoothed = CrossEntropyLoss(label_smoothing=0.2)(logits, target).item()
    assert smoothed == pytest.approx(-(0.9 * math.log(0.75) + 0.1 * math.log(0.25)))  # 1 - 0.2 + 0.2/2 on class 1
    two = torch.tensor([[[[0.0, 0.0]], [[math.log(3.0), math.log(3.0)]]]])  # (1, 2, 1, 2), both p = [1/4, 3/4]
    pair = torch.tensor([[[0, 1]]])
    weighted = CrossEntropyLoss(class_weights=[3.0, 1.0])(two, pair).item()
    assert weighted == pytest.approx((3 * -math.log(0.25) + 1 * -math.log(0.75)) / 4)  # weighted mean


def test_dice_per_image_and_without_background_by_hand() -> None:
    logits = torch.zeros(2, 2, 1, 2)  # p = 0.5 everywhere
    target = torch.tensor([[[1, 1]], [[0, 0]]])
    # batch: class 1: 2 * (2 * 0.5) / (4 * 0.5 + 2) = 0.5, class 0 likewise -> loss 0.5
    assert DiceLoss(smooth=0.0)(logits, target).item() == pytest.approx(0.5)
    # per image, foreground only: image 1: 2 * 1 / (1 + 2) = 2/3; image 2 (no foreground): (0 + s) / (1 + s) ~ 0
    per_image = DiceLoss(smooth=1e-5, include_background=False, batch_dice=False)(logits, target).item()
    assert per_image == pytest.approx(1 - (2 / 3 + 1e-5 / (1 + 1e-5)) / 2, abs=1e-5)
    absent = torch.tensor([[[0, 0]], [[0, 0]]])  # a class absent from target and (nearly) from prediction
    confident = torch.stack([torch.full((1, 2), 20.0), torch.full((1, 2), -20.0)], dim=0)[None].expand(2, 2, 1, 2)
    assert DiceLoss(smooth=1.0)(confident, absent).item() == pytest.approx(0.0, abs=1e-6)


def test_binary_mode_losses_are_the_sigmoid_ones() -> None:
    torch.manual_seed(2)
    z = torch.randn(2, 1, 5, 5)
    target = torch.randint(0, 2, (2, 5, 5))
    target[0, 0] = 255
    valid = target != 255
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z[:, 0][valid], target[valid].float())
    assert CrossEntropyLoss()(z, target).item() == pytest.approx(bce.item(), rel=1e-5)
    assert BCELoss()(z, target).item() == pytest.approx(bce.item(), rel=1e-5)
    p, t = torch.sigmoid(z[:, 0])[valid], target[valid].float()
    dice = (2 * (p * t).sum() + 1e-5) / (p.sum() + t.sum() + 1e-5)
    assert DiceLoss(smooth=1e-5, include_background=False)(z, target).item() == pytest.approx(1 - dice.item(), rel=1e-5)


def test_focal_tversky_lovasz_by_hand() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)]]).reshape(1, 2, 1, 1)
    target = torch.tensor([[[1]]])
    # smp's focal: per class a sigmoid focal term, averaged; class 1: p = sigmoid(ln 3) = 3/4, class 0: 1/2
    focal = smp.losses.FocalLoss("multiclass", gamma=2.0)(logits, target).item()
    expected = ((1 - 0.5) ** 2 * -math.log(0.5) + (1 - 0.75) ** 2 * -math.log(0.75)) / 2
    assert focal == pytest.approx(expected, rel=1e-4)
    # Tversky with alpha = beta = 0.5 is Dice (smp: mean over classes present or not, no smoothing)
    torch.manual_seed(3)
    many = torch.randn(2, 3, 6, 6)
    labels = torch.randint(0, 3, (2, 6, 6))
    tversky = smp.losses.TverskyLoss("multiclass", alpha=0.5, beta=0.5)(many, labels).item()
    assert tversky == pytest.approx(smp.losses.DiceLoss("multiclass")(many, labels).item(), rel=1e-5)
    # Lovász on (near) hard predictions is 1 - IoU, averaged over the classes present
    pred = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 2]]])
    truth = torch.tensor([[[0, 0, 1, 1], [0, 1, 1, 2]]])
    hard = _logits_for(pred, 3, scale=50.0)
    iou = iou_per_class(torch.bincount(truth.flatten() * 3 + pred.flatten(), minlength=9).reshape(3, 3))
    lovasz = smp.losses.LovaszLoss("multiclass")(hard, truth).item()
    assert lovasz == pytest.approx((1 - iou).mean().item(), abs=1e-4)


def test_adapted_rand_error_by_hand_and_as_isbi_defines_it() -> None:
    membrane = np.array([[False, False, True, False, False]])  # two cells of 2 pixels, split by a membrane
    assert adapted_rand_error(membrane, membrane) == 0.0
    # the prediction misses the membrane, so both cells merge: Rand precision 1/3, recall 1 -> error 1/2
    assert adapted_rand_error(membrane, np.zeros_like(membrane)) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    true_b, pred_b = rng.random((40, 40)) < 0.3, rng.random((40, 40)) < 0.3
    direct = skimage_are(label(~true_b, connectivity=1), label(~pred_b, connectivity=1))[0]
    assert adapted_rand_error(true_b, pred_b) == pytest.approx(direct)


def test_hausdorff95_by_hand() -> None:
    a, b = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    a[0, 0], b[3, 4] = True, True
    assert hausdorff95(a, b) == pytest.approx(5.0)  # single pixels: their distance, a 3-4-5 triangle
    assert hausdorff95(a, a) == 0.0
    assert hausdorff95(np.zeros_like(a), np.zeros_like(a)) == 0.0
    diagonal = math.hypot(8, 8)  # a missed (or invented) object: the largest distance in the image
    assert hausdorff95(a, np.zeros_like(a)) == pytest.approx(diagonal)
    assert hausdorff95(np.zeros_like(a), a) == pytest.approx(diagonal)
    square, shifted = np.zeros((20, 20), bool), np.zeros((20, 20), bool)
    square[5:10, 5:10], shifted[5:10, 7:12] = True, True
    assert hausdorff95(square, shifted) == pytest.approx(2.0)  # every boundary pixel is within 2 of the other


def test_image_metric_mean_penalises_a_missed_object() -> None:
    target = torch.zeros(3, 8, 8, dtype=torch.long)
    pred = torch.zeros(3, 8, 8, dtype=torch.long)
    target[0, 0, 0], pred[0, 3, 4] = 1, 1  # HD 5
    target[1, 2, 2], pred[1, 2, 2] = 1, 1  # HD 0
    target[2, 1, 1] = 1  # empty prediction: the image diagonal
    metric = ImageMetricMean("hd95")
    metric.update(pred, target)
    assert metric.compute().item() == pytest.approx((5 + 0 + math.hypot(8, 8)) / 3)
    with pytest.raises(ValueError, match="image metric"):
        ImageMetricMean("rand")
