"""`probslot ...` with the same slot-initialisation noise for every image, also in training.

Training draws each image's initial slots from torch's global generator, so one process with a
batch of 2b and two processes with b each draw different noise for the same images (and each
DDP process is seeded apart on purpose). To compare their weights, the DDP equivalence test runs
both through this entry point, which gives every image the fixed draw that inference uses
(`probslot.nn.layers.slot_noise` with draw 0). Lightning's DDP launcher re-runs this script in
each process, so all of them are patched. With ``PROBSLOT_TEST_SIGTERM_AT=N`` the rank-0
process also sends itself SIGTERM at the end of step N (the DDP stop-and-resume test).
"""

from __future__ import annotations

import os
import signal
import sys

import probslot.nn.psa as psa
from probslot.nn import layers


def _fixed_noise(shape, draw, training, device, dtype):  # noqa: ANN001, ANN202
    return layers.slot_noise(shape, 0, training, device, dtype)


psa.slot_noise = _fixed_noise

if os.environ.get("PROBSLOT_TEST_SIGTERM_AT"):
    # rank 0 sends itself SIGTERM at the end of that step, as a scheduler would: its handler
    # forwards it to the processes Lightning launched, and all of them stop at the same step
    from probslot.training.callbacks import LastCheckpoint

    _at = int(os.environ["PROBSLOT_TEST_SIGTERM_AT"])
    _original = LastCheckpoint.on_train_batch_end

    def _signalling(self, trainer, pl_module, *args):  # noqa: ANN001, ANN002, ANN202
        if trainer.global_step == _at and trainer.global_rank == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        return _original(self, trainer, pl_module, *args)

    LastCheckpoint.on_train_batch_end = _signalling

if __name__ == "__main__":
    from probslot.cli import main

    sys.exit(main(sys.argv[1:]))
