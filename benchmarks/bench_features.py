"""Training step from a feature cache vs running the frozen ViT every step (random weights).

One training step = forward, the feature-reconstruction loss, backward and an AdamW update of a
`probslot.models.FeatureAutoencoder` (PSA-Proj grouping) at 224×224. "ViT" runs the frozen
encoder on the images every step; "cache" reads the batch's float16 tokens from a feature cache
on disk (`probslot.data.features`, written once before timing, the read included in the step)
and skips the encoder. The two are timed in interleaved rounds (so a busy shared CPU slows both
alike) and the script prints, for each head, the median step times and their ratio from one run.

Heads: ``dinosaur-mlp`` is the configs' head (voc_dino_psa_mlp: 6 slots of 256, token MLP 1024,
MLP decoder 1024 × 3); ``light`` a small one (slots of 128, token MLP 256, MLP decoder 256 × 2),
where the encoder is most of the step.

    .venv/bin/python benchmarks/bench_features.py [--batch 4] [--rounds 3] [--threads 1]
    .venv/bin/python benchmarks/bench_features.py --encoders dino-vits16 dino-vitb16
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from probslot.data.features import FeatureCache, extract_features
from probslot.models import ModelConfig, build_model

HEADS = {
    "dinosaur-mlp": {"slot_dim": 256, "token_mlp": 1024, "hidden": [1024, 1024, 1024]},
    "light": {"slot_dim": 128, "token_mlp": 256, "hidden": [256, 256]},
}


class RandomImages(Dataset):
    def __init__(self, n: int, size: int) -> None:
        self.images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i]}


def build(encoder: str, head: dict, size: int):
    torch.manual_seed(0)
    cfg = ModelConfig(
        preset=None, encoder=encoder, grouping="psa-proj", decoder="feature-mlp",
        target="features", encoder_kwargs={"weights": "random"},
        decoder_kwargs={"hidden": head["hidden"]}, token_mlp=head["token_mlp"],
        image_size=size, num_slots=6, slot_dim=head["slot_dim"], iters=3,
    )  # fmt: skip
    return build_model(cfg).train()


def make_step(model, images: torch.Tensor, cache: FeatureCache | None):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=4e-4)
    b = images.shape[0]

    def step() -> float:
        start = time.perf_counter()
        features = None
        if cache is not None:
            features = torch.stack([cache.tokens("train", i) for i in range(b)])
        out = model(images, features=features)
        loss = model.loss(images, out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return time.perf_counter() - start

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--encoders", nargs="+", default=["dino-vits16"])
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = RandomImages(args.batch, args.size)
    batch = images.images
    print(f"batch {args.batch} at {args.size}×{args.size}, {args.threads} thread(s), "
          f"median of {args.rounds} interleaved rounds (after one warm-up)")  # fmt: skip
    print(f"{'encoder':<14} {'head':<14} {'ViT step s':>10} {'cache step s':>12} {'ratio':>7}")
    for encoder in args.encoders:
        for name in args.heads:
            model = build(encoder, HEADS[name], args.size)
            with tempfile.TemporaryDirectory() as tmp:
                root = extract_features(model, {"train": (images, {"bench": True})}, Path(tmp))
                steps = {
                    "vit": make_step(model, batch, None),
                    "cache": make_step(model, batch, FeatureCache(root)),
                }
                for run in steps.values():
                    run()  # warm-up
                times: dict[str, list[float]] = {k: [] for k in steps}
                for _ in range(args.rounds):
                    for key, run in steps.items():
                        times[key].append(run())
            vit, cached = statistics.median(times["vit"]), statistics.median(times["cache"])
            print(f"{encoder:<14} {name:<14} {vit:>10.3f} {cached:>12.3f} {vit / cached:>6.2f}x")


if __name__ == "__main__":
    main()
