"""Reading models: parameter and FLOP counts, per-layer tables, receptive fields, and explanations
(Grad-CAM, Grad-CAM++, vanilla gradients, SmoothGrad, integrated gradients, occlusion)."""

from cnn.analysis.explain import METHODS, heat_maps
from cnn.analysis.gradcam import feature_layers, grad_cam, grad_cam_plus_plus
from cnn.analysis.receptive_field import ReceptiveField, receptive_field
from cnn.analysis.saliency import heat_map, integrated_gradients, occlusion, smoothgrad, vanilla_gradients
from cnn.analysis.summary import LayerRow, Summary, count, forward_flops, forward_macs, summary

__all__ = [
    "METHODS", "LayerRow", "ReceptiveField", "Summary", "count", "feature_layers", "forward_flops", "forward_macs",
    "grad_cam", "grad_cam_plus_plus", "heat_map", "heat_maps", "integrated_gradients", "occlusion", "receptive_field",
    "smoothgrad", "summary", "vanilla_gradients",
]
