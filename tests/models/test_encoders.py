"""Swappable encoders: every family returns full-resolution logits; weights import equals the reference."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from segkit.models import UNet
from segkit.models.encoders import TimmEncoder
from segkit.models.weights import WeightsUnavailableError, adapt_first_conv, read_state_dict, weight_file_format

SMALL = ["resnet18", "convnext_atto", "convnextv2_atto", "vgg11_bn", "test_resnet", "test_convnext"]
LARGE = [
    "resnet34", "resnet50", "resnet101", "resnet152",
    "convnext_tiny", "convnext_small", "convnext_base", "convnext_large",
    "convnextv2_femto", "convnextv2_pico", "convnextv2_nano", "convnextv2_tiny",
    "convnextv2_base", "convnextv2_large", "convnextv2_huge", "vgg16_bn",
]  # fmt: skip


@pytest.mark.parametrize("encoder", SMALL)
@pytest.mark.parametrize("hw", [(64, 64), (65, 97)])
def test_every_family_returns_logits_at_input_size(encoder: str, hw: tuple[int, int]) -> None:
    net = UNet(num_classes=3, encoder=encoder).eval()
    with torch.no_grad():
        assert net(torch.rand(2, 3, *hw)).shape == (2, 3, *hw)


@pytest.mark.slow
@pytest.mark.parametrize("encoder", LARGE)
def test_large_variants_return_logits_at_input_size(encoder: str) -> None:
    net = UNet(num_classes=2, encoder=encoder).eval()
    with torch.no_grad():
        for hw in [(64, 64), (65, 97)]:
            assert net(torch.rand(1, 3, *hw)).shape == (1, 2, *hw)


@pytest.mark.parametrize("encoder", ["test_resnet", "test_convnext", "vgg11_bn"])
def test_contract_is_read_from_feature_info(encoder: str) -> None:
    enc = TimmEncoder(encoder)
    info = timm.create_model(encoder, features_only=True).feature_info
    assert enc.channels == info.channels() and enc.reductions == info.reduction()
    features = enc(torch.rand(1, 3, 64, 64))
    assert [f.shape[1] for f in features] == enc.channels
    assert [64 // f.shape[-1] for f in features] == enc.reductions


def test_stride4_encoders_get_real_high_resolution_skips() -> None:
    net = UNet(num_classes=2, encoder="test_convnext")
    features = net.features(torch.rand(1, 3, 64, 64))
    assert [64 // f.shape[-1] for f in features] == [1, 2, 4, 8, 16, 32]
    assert all(f.abs().sum() > 0 for f in features)  # no empty placeholder tensors


def test_torchvision_resnet50_file_gives_torchvision_features(tmp_path: Path) -> None:
    reference = torchvision.models.resnet50().eval()
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    enc = TimmEncoder("resnet50", weights=f"file:{path}").eval()
    assert enc.load_report.loaded == enc.load_report.total and not enc.load_report.missing
    assert enc.load_report.unexpected == ["fc.weight", "fc.bias"]
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        feats = enc(x)
        y = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        for i, layer in enumerate([reference.layer1, reference.layer2, reference.layer3, reference.layer4]):
            y = layer(y)
            torch.testing.assert_close(feats[i + 1], y, atol=1e-5, rtol=0)


def test_timm_convnext_safetensors_gives_timm_features(tmp_path: Path) -> None:
    reference = timm.create_model("convnext_tiny").eval()
    path = tmp_path / "convnext_tiny.safetensors"
    save_file(reference.state_dict(), str(path))
    enc = TimmEncoder("convnext_tiny", weights=f"file:{path}").eval()
    assert not enc.load_report.missing and not enc.load_report.mismatched
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected, h = [], reference.stem(x)  # the four stage outputs, written out (forward_intermediates
        for stage in reference.stages:  # returned the stem's output too before timm 1.0.15)
            h = stage(h)
            expected.append(h)
        for got, want in zip(enc(x), expected, strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_one_channel_adaptation_sums_rgb_and_four_channels_repeat_and_scale(tmp_path: Path) -> None:
    source = torchvision.models.resnet18().state_dict()
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.items()}}, path)  # wrapped + DataParallel
    gray = TimmEncoder("resnet18", in_channels=1, weights=f"file:{path}")
    torch.testing.assert_close(gray.model.conv1.weight, source["conv1.weight"].sum(dim=1, keepdim=True))
    assert "sum" in gray.load_report.adapted[0]
    four = TimmEncoder("resnet18", in_channels=4, weights=f"file:{path}")
    w = source["conv1.weight"]
    torch.testing.assert_close(four.model.conv1.weight, torch.cat([w, w[:, :1]], dim=1) * 3 / 4)


def test_segkit_checkpoint_encoder_round_trips_bit_exactly(tmp_path: Path) -> None:
    trained = UNet(num_classes=2, encoder="test_convnext")
    path = tmp_path / "seg.ckpt"
    # the layout of a segkit Lightning checkpoint: task.net.* plus other task state
    state = {f"net.{k}": v for k, v in trained.state_dict().items()}
    state["confmat.val.confmat"] = torch.zeros(2, 2)
    torch.save({"state_dict": state, "epoch": 3}, path)
    loaded = UNet(num_classes=5, encoder="test_convnext", weights=f"file:{path}")
    for key, value in trained.encoder.state_dict().items():
        assert torch.equal(loaded.encoder.state_dict()[key], value), key
    assert loaded.encoder.load_report.unexpected == []


def test_smp_unet_checkpoint_encoder_is_extracted(tmp_path: Path) -> None:
    import segmentation_models_pytorch as smp

    smp_net = smp.Unet("resnet18", encoder_weights=None, classes=2)
    path = tmp_path / "smp.pth"
    torch.save(smp_net.state_dict(), path)
    enc = TimmEncoder("resnet18", weights=f"file:{path}")
    assert not enc.load_report.missing
    torch.testing.assert_close(enc.model.layer4[1].conv2.weight, smp_net.encoder.layer4[1].conv2.weight)


def test_strict_mode_and_wrong_architecture_raise(tmp_path: Path) -> None:
    partial = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("layer4")}
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    assert TimmEncoder("resnet18", weights=f"file:{path}").load_report.missing
    with pytest.raises(ValueError, match="strict"):
        TimmEncoder("resnet18", weights=f"file:{path}", strict=True)
    with pytest.raises(ValueError, match="no tensor"):
        TimmEncoder("test_convnext", weights=f"file:{path}")


def test_another_resnets_file_is_warned_about_and_no_deep_conv_is_adapted(tmp_path: Path, caplog, monkeypatch) -> None:
    """A ResNet-50 file given to a ResNet-34 loaded its BatchNorms in silence, and its report listed deep 1x1
    convs (256 -> 3 input channels) as "first-conv adaptations". Typed without ``file:``, a path was looked up
    as a timm tag ("timm has no pretrained weights named 'r50.pth'")."""
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "r50.pth")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="segkit.models.encoders"):
        report = TimmEncoder("resnet34", weights="r50.pth").load_report  # a bare relative path
    assert report.source == "file r50.pth" and report.adapted == []
    assert report.mismatched and not report.missing
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert f"{len(report.mismatched)} of {report.total} encoder tensors keep their random initialisation" in warning
    assert "are these resnet34 weights?" in warning
    with pytest.raises(FileNotFoundError, match="weights file not found: nowhere.pth"):
        TimmEncoder("resnet34", weights="nowhere.pth")


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": torchvision.models.resnet18()}, path)  # a whole module, needs unpickling
    with pytest.raises(ValueError, match="safely"):
        read_state_dict(path)


def test_offline_hub_weights_fail_fast_with_advice() -> None:
    with pytest.raises(WeightsUnavailableError, match="weights=file:"):
        UNet(num_classes=2, encoder="resnet18", weights="imagenet")


def test_freeze_encoder_keeps_weights_and_batchnorm_statistics() -> None:
    net = UNet(num_classes=2, encoder="test_resnet", freeze_encoder=True).train()
    before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    net(torch.rand(2, 3, 64, 64)).sum().backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in net.encoder.state_dict().items())
    assert not net.encoder.training and net.decoder.training


@pytest.mark.parametrize("name", ["resnet20-12fca82f.th", "model_best.pth.tar", "weights"])
@pytest.mark.parametrize("legacy", [False, True])
def test_weight_files_are_recognised_by_content_not_extension(tmp_path: Path, name: str, legacy: bool) -> None:
    source = torchvision.models.resnet18().state_dict()
    path = tmp_path / name
    torch.save({"state_dict": source}, path, _use_new_zipfile_serialization=not legacy)
    enc = TimmEncoder("resnet18", weights=f"file:{path}")
    assert enc.load_report.loaded == len(source) - 2  # all but the classifier's fc.weight / fc.bias
    torch.testing.assert_close(enc.model.layer1[0].conv1.weight, source["layer1.0.conv1.weight"])


def test_safetensors_without_its_extension_and_non_weight_files(tmp_path: Path) -> None:
    source = timm.create_model("test_resnet").state_dict()
    path = tmp_path / "exported.bin"
    save_file(source, str(path))
    assert weight_file_format(path) == "safetensors"
    assert read_state_dict(path).keys() == source.keys()
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    with pytest.raises(ValueError, match=r"notes\.pth is neither a safetensors file nor a torch\.save file"):
        read_state_dict(text)


def test_first_conv_adaptation_rule_by_hand() -> None:
    weight = torch.arange(2 * 3 * 1 * 1, dtype=torch.float32).view(2, 3, 1, 1)  # [[0, 1, 2], [3, 4, 5]]
    assert adapt_first_conv(weight, 1).flatten().tolist() == [3.0, 12.0]
    five = adapt_first_conv(weight, 5).view(2, 5)
    torch.testing.assert_close(five, torch.tensor([[0.0, 1, 2, 0, 1], [3, 4, 5, 3, 4]]) * 3 / 5)


def test_channels_last_family_reaches_the_decoder_channels_first() -> None:
    net = UNet(num_classes=2, encoder="swin_tiny_patch4_window7_224").eval()  # its native 224x224
    assert net.encoder.channels_last_output
    with torch.no_grad():
        features = net.encoder(torch.rand(1, 3, 224, 224))
        assert [f.shape[1] for f in features] == net.encoder.channels == [96, 192, 384, 768]
        assert net(torch.rand(1, 3, 224, 224)).shape == (1, 2, 224, 224)


def test_plain_vit_encoder_keeps_its_weights_and_segments(tmp_path: Path) -> None:
    reference = timm.create_model("test_vit")  # the bare model, as a timm checkpoint holds it
    path = tmp_path / "vit.pth"
    torch.save(reference.state_dict(), path)
    net = UNet(num_classes=2, encoder="test_vit", weights=f"file:{path}").eval()
    report = net.encoder.load_report
    assert report.loaded == report.total and not report.missing
    torch.testing.assert_close(net.encoder.model.model.blocks[0].attn.qkv.weight, reference.blocks[0].attn.qkv.weight)
    assert net.encoder.reductions == [16, 16, 16]
    with torch.no_grad():
        assert net(torch.rand(1, 3, 160, 160)).shape == (1, 2, 160, 160)
    # and a segkit checkpoint of that U-Net hands its ViT encoder on bit-exactly
    saved = path.parent / "unet_vit.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, saved)
    again = UNet(num_classes=3, encoder="test_vit", weights=f"file:{saved}", strict_weights=True)
    for key, value in net.encoder.state_dict().items():
        assert torch.equal(again.encoder.state_dict()[key], value), key
