"""Losses and scores against hand-computed numbers, ignored pixels and absent classes included."""

from __future__ import annotations

import math

import pytest
import torch

from segkit.losses import BCELoss, DiceCELoss, DiceLoss
from segkit.metrics import dice_per_class, iou_per_class, pixel_accuracy, segmentation_scores


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
    expected = ce + DiceLoss()(logits, target)
    assert DiceCELoss()(logits, target).item() == pytest.approx(expected.item())
    changed = logits.clone()
    changed[0, :, 1, 0] = 100.0  # only the ignored pixel changes
    assert BCELoss()(changed, target).item() == pytest.approx(BCELoss()(logits, target).item())


@pytest.mark.parametrize("loss", [DiceLoss(), DiceCELoss(), BCELoss(), torch.nn.CrossEntropyLoss(ignore_index=255)])
def test_losses_give_gradients(loss: torch.nn.Module) -> None:
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    target[:, 0] = 255
    loss(logits, target).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert logits.grad[:, :, 0].abs().sum() == 0  # ignored row gets no gradient
