"""Training: the Lightning module, callbacks, schedules and run logic (the only Lightning user)."""

from probslot.metrics.segmentation import fg_ari
from probslot.training.callbacks import (
    EMA,
    AtomicCheckpointIO,
    LastCheckpoint,
    PanelCallback,
    ProgressLines,
    render_panel,
)
from probslot.training.checkpoint import CheckpointError, load_checkpoint
from probslot.training.lit_module import (
    SlotLightningModule,
    TrainingDiverged,
    predicted_segmentation,
)
from probslot.training.run import TrainResult, resolve_run_config, train
from probslot.training.schedule import lr_at, lr_factor

__all__ = [
    "EMA",
    "AtomicCheckpointIO",
    "CheckpointError",
    "LastCheckpoint",
    "PanelCallback",
    "ProgressLines",
    "SlotLightningModule",
    "TrainResult",
    "TrainingDiverged",
    "fg_ari",
    "load_checkpoint",
    "lr_at",
    "lr_factor",
    "predicted_segmentation",
    "render_panel",
    "resolve_run_config",
    "train",
]
