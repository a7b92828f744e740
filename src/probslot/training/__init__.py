"""Training: the Lightning module, callbacks, schedules and run logic (the only Lightning user)."""

from probslot.metrics.segmentation import fg_ari
from probslot.training.callbacks import EMA, AtomicCheckpointIO, PanelCallback, render_panel
from probslot.training.lit_module import SlotLightningModule, predicted_segmentation
from probslot.training.run import TrainResult, train
from probslot.training.schedule import lr_at, lr_factor

__all__ = [
    "EMA",
    "AtomicCheckpointIO",
    "PanelCallback",
    "SlotLightningModule",
    "TrainResult",
    "fg_ari",
    "lr_at",
    "lr_factor",
    "predicted_segmentation",
    "render_panel",
    "train",
]
