"""Segmentation and classification networks and the encoders they share."""

from segkit.models.classifier import Classifier
from segkit.models.encoders import TimmEncoder, UNetEncoder
from segkit.models.heads import ClassificationHead
from segkit.models.unet import UNet, UNetDecoder

__all__ = ["ClassificationHead", "Classifier", "TimmEncoder", "UNet", "UNetDecoder", "UNetEncoder"]
