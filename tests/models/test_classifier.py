"""Classifier shapes, aux-head U-Net, and encoder handoff between segmentation and classification."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segkit.models import Classifier, UNet
from segkit.tasks.segmentation import class_presence

SMALLEST = ["unet", "resnet18", "convnext_atto", "convnextv2_atto", "vgg11_bn", "test_convnext"]


@pytest.mark.parametrize("encoder", SMALLEST)
@pytest.mark.parametrize("pool", ["avg", "max", "avgmax"])
def test_classifier_returns_logits_for_every_family(encoder: str, pool: str) -> None:
    net = Classifier(encoder=encoder, num_classes=5, pool=pool, dropout=0.1).eval()
    with torch.no_grad():
        assert net(torch.rand(2, 3, 64, 64)).shape == (2, 5)
        assert net(torch.rand(2, 3, 65, 97)).shape == (2, 5)


def _save_task_checkpoint(net: torch.nn.Module, path: Path) -> None:
    """The layout of a segkit Lightning checkpoint: the task's state dict with the net under ``net.``."""
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "global_step": 10}, path)


@pytest.mark.parametrize("encoder", ["test_resnet", "unet"])
def test_handoff_classifier_to_unet_and_back_is_bit_identical(tmp_path: Path, encoder: str) -> None:
    classifier = Classifier(encoder=encoder, num_classes=2)
    _save_task_checkpoint(classifier, tmp_path / "cls.ckpt")
    unet = UNet(num_classes=3, encoder=encoder, weights=f"file:{tmp_path / 'cls.ckpt'}", strict_weights=True)
    for key, value in classifier.encoder.state_dict().items():
        assert torch.equal(unet.encoder.state_dict()[key], value), key
    assert unet.encoder.load_report.unexpected == []  # the classifier head is not offered to the encoder

    _save_task_checkpoint(unet, tmp_path / "seg.ckpt")
    back = Classifier(encoder=encoder, num_classes=7, weights=f"file:{tmp_path / 'seg.ckpt'}", strict_weights=True)
    for key, value in unet.encoder.state_dict().items():
        assert torch.equal(back.encoder.state_dict()[key], value), key
    assert back.encoder.load_report.loaded == back.encoder.load_report.total


def test_aux_head_unet_returns_mask_and_class_logits_and_trains() -> None:
    net = UNet(num_classes=3, encoder="test_resnet", aux_head={"num_classes": 3, "pool": "avgmax", "loss_weight": 0.5})
    mask = torch.zeros(2, 64, 64, dtype=torch.long)
    mask[0, :10, :10] = 2
    targets = class_presence(mask, 3, ignore_index=255)
    assert targets.tolist() == [[1, 0, 1], [1, 0, 0]]
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.rand(2, 3, 64, 64)
    losses = []
    for _ in range(5):
        seg, cls = net(x)
        assert seg.shape == (2, 3, 64, 64) and cls.shape == (2, 3)
        loss = torch.nn.functional.cross_entropy(
            seg, mask
        ) + net.aux_loss_weight * torch.nn.functional.binary_cross_entropy_with_logits(cls, targets.float())
        opt.zero_grad()
        loss.backward()
        assert net.aux_head.fc.weight.grad.abs().sum() > 0
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_aux_head_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="aux_head takes"):
        UNet(num_classes=2, aux_head={"num_classes": 2, "weight": 1.0})
