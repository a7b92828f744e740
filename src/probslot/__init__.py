"""probslot: identifiable object-centric learning with Probabilistic Slot Attention."""

from probslot.io import load_model
from probslot.typing import (
    AutoencoderOutput,
    DecoderOutput,
    EncoderOutput,
    SlotAttentionOutput,
    SlotPosterior,
)

__version__ = "0.1.0"

__all__ = [
    "AutoencoderOutput",
    "DecoderOutput",
    "EncoderOutput",
    "SlotAttentionOutput",
    "SlotPosterior",
    "__version__",
    "load_model",
]
