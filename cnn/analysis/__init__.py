"""Reading models: parameter and FLOP counts, per-layer tables, receptive fields."""

from cnn.analysis.receptive_field import ReceptiveField, receptive_field
from cnn.analysis.summary import LayerRow, Summary, count, forward_flops, forward_macs, summary

__all__ = ["LayerRow", "ReceptiveField", "Summary", "count", "forward_flops", "forward_macs", "receptive_field", "summary"]
