"""Scoring: confusion-matrix scores pooled over pixels, per-image scores averaged over images, the binary
(one sigmoid channel) view as two classes, and the strict-JSON files and tables the numbers end in."""

from segkit.metrics.binary import two_class_logits
from segkit.metrics.confusion import (
    dice_per_class,
    iou_per_class,
    metric_mode,
    pixel_accuracy,
    precision_per_class,
    recall_per_class,
    segmentation_scores,
)
from segkit.metrics.output import strict_json, write_metrics
from segkit.metrics.per_image import IMAGE_METRICS, ImageMetricMean, adapted_rand_error, hausdorff95

__all__ = [
    "IMAGE_METRICS",
    "ImageMetricMean",
    "adapted_rand_error",
    "dice_per_class",
    "hausdorff95",
    "iou_per_class",
    "metric_mode",
    "pixel_accuracy",
    "precision_per_class",
    "recall_per_class",
    "segmentation_scores",
    "strict_json",
    "two_class_logits",
    "write_metrics",
]
