"""Segmentation and classification networks and the encoders they share."""

from segkit.models.blocks import MinPool2d
from segkit.models.classifier import Classifier
from segkit.models.encoders import TimmEncoder, UNetEncoder
from segkit.models.heads import ClassificationHead
from segkit.models.unet import UNet, UNetDecoder

__all__ = ["ClassificationHead", "Classifier", "MinPool2d", "TimmEncoder", "UNet", "UNetDecoder", "UNetEncoder"]
