"""Training-step throughput (images/s) of PSA vs SA with the same encoder, decoder and likelihood.

One training step = forward, likelihood NLL, backward, gradient clipping and an AdamW update, as
`probslot.training.SlotLightningModule` does (without Lightning's loop overhead, which is the
same for both). The models are timed in interleaved rounds so that a shared, busy CPU slows both
alike; the script prints medians and the PSA / SA ratio (target: PSA >= 0.9x SA).

    .venv/bin/python benchmarks/bench_train_step.py [--batch 32] [--image-size 32] [--steps 20]
    python benchmarks/bench_train_step.py --device cuda --dtype bf16 --batch 64 --image-size 64

On CUDA each step is synchronised before the clock stops, ``--dtype bf16`` runs the forward pass
and the loss under ``torch.autocast(bfloat16)`` (what Lightning's ``precision="bf16-mixed"`` does;
PSA's EM stays float32 inside), and the peak memory of each model's training step is printed
(``torch.cuda.max_memory_allocated`` over the step, parameters and optimiser state included).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from probslot.models import ModelConfig, build_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(cfg: ModelConfig, images: torch.Tensor, amp_dtype: torch.dtype | None):
    torch.manual_seed(0)
    device = images.device
    model = build_model(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=4e-4, betas=(0.9, 0.9), weight_decay=0.01)

    def step() -> float:
        _sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = model(images)
            loss = model.loss(images, out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        opt.step()
        _sync(device)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{cfg.preset}: non-finite training loss {float(loss)}")
        return time.perf_counter() - start

    return step


def peak_step_memory(step, device: torch.device) -> float:
    """MiB: peak CUDA memory over one training step (nan on the CPU)."""
    if device.type != "cuda":
        return float("nan")
    torch.cuda.reset_peak_memory_stats(device)
    step()
    return torch.cuda.max_memory_allocated(device) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--slots", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--dtype", default="fp32", choices=["fp32", "bf16"], help="bf16 = autocast (mixed)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but torch.cuda.is_available() is False")
    device = torch.device(args.device)
    amp_dtype = torch.bfloat16 if args.dtype == "bf16" else None

    shared = dict(
        image_size=args.image_size,
        num_slots=args.slots,
        slot_dim=64,
        likelihood="mse",
        encoder_kwargs={
            "channels": [32, 32, 64, 64],
            "kernel_sizes": [5, 3, 3, 3],
            "strides": [1, 2, 1, 1],
        },
        # two ×2 upsamplings at any size (8×8 broadcast grid at the default 32×32)
        decoder_kwargs={
            "channels": [32, 32, 32],
            "init_size": args.image_size // 4,
            "kernel_size": 5,
        },
    )
    variants = {
        "SA (3 iters)": ModelConfig(preset="SA", iters=3, **shared),
        "PSA (3 iters)": ModelConfig(preset="PSA", iters=3, **shared),
        "PSA (5 iters, preset)": ModelConfig(preset="PSA", iters=5, **shared),
        "PSA-Proj (3 iters)": ModelConfig(preset="PSA-Proj", iters=3, **shared),
    }
    images = torch.rand(args.batch, 3, args.image_size, args.image_size, device=device)
    steps = {name: make_step(cfg, images, amp_dtype) for name, cfg in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(args.warmup + args.steps):
        for name, step in steps.items():  # interleaved rounds: contention hits every model alike
            t = step()
            if i >= args.warmup:
                times[name].append(t)

    memory = {name: peak_step_memory(step, device) for name, step in steps.items()}

    base = statistics.median(times["SA (3 iters)"])
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu, torch threads {torch.get_num_threads()}"
    )
    print(
        f"training-step throughput, batch {args.batch}, {args.image_size}x{args.image_size}, "
        f"{args.slots} slots, {args.steps} timed steps each, {args.dtype}, {where}"
    )
    print(f"{'model':<24} {'median ms/step':>15} {'images/s':>10} {'vs SA':>7} {'peak MiB':>9}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(
            f"{name:<24} {med * 1e3:>15.1f} {args.batch / med:>10.1f} {base / med:>6.2f}x "
            f"{memory[name]:>9.0f}"
        )
    ratio = base / statistics.median(times["PSA (3 iters)"])
    verdict = "meets" if ratio >= 0.9 else "misses"
    print(f"PSA / SA throughput ratio (same iterations): {ratio:.2f}x ({verdict} the 0.9x target)")


if __name__ == "__main__":
    main()
