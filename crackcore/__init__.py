"""crackcore: a reproducible modified CenterNet for crack detection on sanitary ceramics."""
from .decode import decode
from .labels import encode, gaussian_radius, gaussian_radius_official, gaussian_sigma
from .losses import LossConfig, centernet_loss, focal_loss, wh_loss
from .metrics import box_iou, voc_ap
from .models import VARIANTS, build_model, model_stats, sigmoid_heatmap

__version__ = "0.1.0"
__all__ = ["VARIANTS", "build_model", "model_stats", "sigmoid_heatmap", "encode", "gaussian_radius",
           "gaussian_radius_official", "gaussian_sigma", "LossConfig", "centernet_loss", "focal_loss", "wh_loss",
           "decode", "voc_ap", "box_iou"]
