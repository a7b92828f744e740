"""`probslot ...` with the same slot-initialisation noise for every image, also in training.

Training draws each image's initial slots from torch's global generator, so one process with a
batch of 2b and two processes with b each draw different noise for the same images (and each
DDP process is seeded apart on purpose). To compare their weights, the DDP equivalence test runs
both through this entry point, which gives every image the fixed draw that inference uses
(`probslot.nn.layers.slot_noise` with draw 0). Lightning's DDP launcher re-runs this script in
each process, so all of them are patched.
"""

from __future__ import annotations

import sys

import probslot.nn.psa as psa
from probslot.nn import layers


def _fixed_noise(shape, draw, training, device, dtype):  # noqa: ANN001, ANN202
    return layers.slot_noise(shape, 0, training, device, dtype)


psa.slot_noise = _fixed_noise

if __name__ == "__main__":
    from probslot.cli import main

    sys.exit(main(sys.argv[1:]))
