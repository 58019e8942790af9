"""Segmentation networks and the encoders they are built from."""

from segkit.models.encoders import UNetEncoder
from segkit.models.unet import UNet, UNetDecoder

__all__ = ["UNet", "UNetDecoder", "UNetEncoder"]
