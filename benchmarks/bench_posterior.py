"""Speed and memory of the aggregate posterior (issue 5 targets), one run, sizes and ratios printed.

(a) ``AggregatePosterior.fit`` streaming vs a plain inference pass (``model.encode`` on every
    batch, nothing kept) over the same DataLoader with a small stand-in conv + EM "PSA" model.
    Target: fit speed ≥ 0.9× the plain pass. The two are interleaved ``--repeats`` times and
    the best of each is compared, so load from other processes affects both alike.
(b) ``log_prob`` of ``--points`` (10,000) points against ``--images`` × ``--slots`` components
    (100,000 × 7 = 700,000, d = 64), built from random tensors. Target: peak memory < 2 GB.
    The peak is the resident-set high-water mark (VmHWM in /proc/self/status) of this process,
    reset just before the call through /proc/self/clear_refs where Linux allows it; the process
    baseline (Python, torch, the 360 MB posterior) is printed alongside.
(c) ``sample`` of 100,000 slots from the same posterior. Target: < 1 s (cold: first call,
    including the cumulative weights; warm: later calls).
(d) ``compress`` of a clustered synthetic posterior (objects drawn around prototypes), with its
    Monte-Carlo KL(q || q_c).

Times are wall clock; CPU time of this process is printed too, because on a shared machine
wall-clock time grows with other load (CPU time / threads is the unloaded wall-clock estimate).

    python benchmarks/bench_posterior.py                    # full sizes (several minutes on 2 cores)
    python benchmarks/bench_posterior.py --points 1000      # quicker (b)
    python benchmarks/bench_posterior.py --device cuda
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from probslot.posterior import AggregatePosterior
from probslot.typing import SlotPosterior


# ---------------------------------------------------------------------- stand-in PSA model
class BenchPSA(nn.Module):
    """Conv encoder (64×64 → 16×16 tokens of width d) + `iters` diagonal-GMM EM steps."""

    def __init__(self, num_slots: int = 7, dim: int = 64, iters: int = 3) -> None:
        super().__init__()
        self.k, self.d, self.iters = num_slots, dim, iters
        self.conv = nn.Sequential(
            nn.Conv2d(3, 32, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(32, dim, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.mu0 = nn.Parameter(torch.randn(num_slots, dim))

    def encode(self, images: torch.Tensor, num_slots: int | None = None) -> SlotPosterior:
        tokens = self.conv(images).flatten(2).transpose(1, 2)  # (b, n, d)
        b, n, d = tokens.shape
        mu = self.mu0.expand(b, -1, -1)  # (b, k, d)
        var = torch.ones_like(mu)
        pi = torch.full((b, self.k), 1.0 / self.k, device=images.device)
        for _ in range(self.iters):
            # E-step: log π_k + log N(z_n; μ_k, σ²_k), softmax over slots
            diff = tokens[:, None] - mu[:, :, None]  # (b, k, n, d)
            logp = -0.5 * ((diff**2 / var[:, :, None]).sum(-1) + var.log().sum(-1)[..., None])
            attn = torch.softmax(logp + pi.log()[..., None], dim=1)  # (b, k, n)
            w = attn / attn.sum(-1, keepdim=True)
            mu = torch.einsum("bkn,bnd->bkd", w, tokens)
            var = torch.einsum("bkn,bknd->bkd", w, (tokens[:, None] - mu[:, :, None]) ** 2) + 1e-4
            pi = attn.mean(-1)
        return SlotPosterior(mu, var, F.normalize(pi, p=1, dim=-1), attn)


class RandomImages(Dataset):
    def __init__(self, n: int, size: int = 64) -> None:
        self.images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i]}


# ---------------------------------------------------------------------- helpers
def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process, result)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def vm_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def gib(kib: int) -> float:
    return kib / 2**20


# ---------------------------------------------------------------------- the cases
class EncodeTimer:
    """Wraps a model's encode to add up the wall time spent inside it."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.inner, self.seconds = model, model.encode, 0.0
        self.device = next(model.parameters()).device

    def encode(self, images: torch.Tensor, num_slots: int | None = None) -> SlotPosterior:
        t = time.perf_counter()
        # not an nn.Module, so fit() leaves the batch where the loader put it: move it here
        images = images.to(self.device)
        out = self.inner(images, num_slots)
        if images.is_cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t
        return out


def bench_fit(args: argparse.Namespace, device: torch.device) -> None:
    model = BenchPSA(num_slots=args.slots, dim=args.dim).to(device).eval()
    loader = DataLoader(RandomImages(args.fit_images), batch_size=args.batch)

    def plain() -> None:
        with torch.inference_mode():
            for batch in loader:
                model.encode(batch["image"].to(device))

    def fit() -> AggregatePosterior:
        return AggregatePosterior.fit(model, loader, progress=args.progress)

    plain()  # warm-up
    walls: dict[str, list[float]] = {"plain": [], "fit": []}
    cpus: dict[str, list[float]] = {"plain": [], "fit": []}
    for _ in range(args.repeats):  # interleaved, so that outside load hits both alike
        for name, fn in (("plain", plain), ("fit", fit)):
            w, c, out = timed(fn)
            walls[name].append(w)
            cpus[name].append(c)
        assert isinstance(out, AggregatePosterior) and out.num_images == args.fit_images
    # load-independent view: the share of fit's wall time spent inside model.encode
    timer = EncodeTimer(model)
    w_fit, _, _ = timed(lambda: AggregatePosterior.fit(timer, loader, progress=args.progress))
    n = args.fit_images
    p_w, f_w, p_c, f_c = (
        min(walls["plain"]),
        min(walls["fit"]),
        min(cpus["plain"]),
        min(cpus["fit"]),
    )
    print(
        f"(a) fit streaming: {n} images 64×64, batch {args.batch}, K={args.slots}, d={args.dim}, "
        f"best of {args.repeats} interleaved runs"
    )
    print(f"    plain inference pass   wall {p_w:7.3f} s ({n / p_w:7.1f} img/s)   CPU {p_c:7.3f} s")
    print(f"    AggregatePosterior.fit wall {f_w:7.3f} s ({n / f_w:7.1f} img/s)   CPU {f_c:7.3f} s")
    print(
        f"    speed ratio fit/plain: wall {p_w / f_w:.3f}×, CPU {p_c / f_c:.3f}×; share of fit time "
        f"inside model.encode {timer.seconds / w_fit:.3f}   (target ≥ 0.9×)"
    )


def bench_density_and_sampling(args: argparse.Namespace, device: torch.device) -> None:
    m, k, d = args.images, args.slots, args.dim
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(m, k, d, generator=g)
    var = 0.5 + torch.rand(m, k, d, generator=g)
    pi = torch.softmax(torch.randn(m, k, generator=g), -1)
    q = AggregatePosterior(mu.to(device), var.to(device), pi.to(device))
    del mu, var, pi
    z = torch.randn(args.points, d, generator=g).to(device)
    size_gib = 2 * m * k * d * 4 / 2**30

    baseline = vm_kib("VmRSS")
    can_reset = reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        cuda_base = torch.cuda.memory_allocated()
    wall, cpu, lp = timed(lambda: q.log_prob(z, chunk_size=args.chunk_size))
    peak = vm_kib("VmHWM")
    assert isinstance(lp, torch.Tensor) and lp.shape == (args.points,) and torch.isfinite(lp).all()
    pairs = args.points * q.num_components
    print(
        f"(b) log_prob: {args.points} points × {q.num_components} components "
        f"({m} images × {k} slots), d={d}, chunk_size={args.chunk_size}, posterior {size_gib:.2f} GiB"
    )
    print(
        f"    time {wall:.2f} s (CPU {cpu:.2f} s, {torch.get_num_threads()} threads); {pairs / wall / 1e6:.1f} M point-component pairs/s"
    )
    reset_note = "since reset" if can_reset else "whole process (could not reset)"
    print(
        f"    peak RSS {gib(peak):.3f} GiB ({reset_note}); baseline RSS before the call "
        f"{gib(baseline):.3f} GiB; growth {gib(peak - baseline) * 1024:.0f} MiB   (target < 2 GiB)"
    )
    if device.type == "cuda":
        extra = (torch.cuda.max_memory_allocated() - cuda_base) / 2**20
        print(f"    CUDA peak allocation during the call {extra:.0f} MiB")

    gen = torch.Generator(device=device).manual_seed(1)
    wall_cold, _, s = timed(lambda: q.sample(args.samples, generator=gen))
    warm = min(timed(lambda: q.sample(args.samples, generator=gen))[0] for _ in range(3))
    assert isinstance(s, torch.Tensor) and s.shape == (args.samples, d)
    print(f"(c) sample {args.samples} slots from {q.num_components} components, d={d}")
    print(
        f"    cold {wall_cold:.3f} s, warm {warm:.3f} s   (target < 1 s; ratio to target {warm:.2f})"
    )


def bench_compress(args: argparse.Namespace, device: torch.device) -> None:
    # clustered posterior: each slot is one of 32 prototype objects, jittered per image
    g = torch.Generator().manual_seed(2)
    m, k, d, protos = args.compress_images, args.slots, args.dim, 32
    centres = 3 * torch.randn(protos, d, generator=g)
    which = torch.randint(protos, (m, k), generator=g)
    mu = centres[which] + 0.3 * torch.randn(m, k, d, generator=g)
    var = 0.05 + 0.05 * torch.rand(m, k, d, generator=g)
    pi = torch.softmax(torch.randn(m, k, generator=g), -1)
    q = AggregatePosterior(mu.to(device), var.to(device), pi.to(device))
    print(
        f"(d) compress {q.num_components} components ({m} images × {k} slots, {protos} prototypes), d={d}"
    )
    for n in args.compress_to:
        wall, _, (qc, rep) = timed(
            lambda n=n: q.compress(n, num_samples=args.compress_samples, iters=50, num_holdout=2000)
        )
        print(
            f"    → {n:4d} components ({rep.compression_ratio:8.0f}×) in {wall:6.2f} s, "
            f"{rep.iterations} EM iters: log q {rep.holdout_loglik_q:9.3f}, log q_c "
            f"{rep.holdout_loglik_compressed:9.3f}, KL ≈ {rep.kl_estimate:.3f} ± {rep.kl_stderr:.3f} nats/slot"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--slots", type=int, default=7)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--chunk-size", type=int, default=2048)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--fit-images", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="time fit without its progress bar (default: with it, as users run it)",
    )
    parser.add_argument("--compress-images", type=int, default=20_000)
    parser.add_argument("--compress-samples", type=int, default=50_000)
    parser.add_argument("--compress-to", type=int, nargs="*", default=[32, 256])
    parser.add_argument("--skip", nargs="*", default=[], choices=["fit", "density", "compress"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"bench_posterior: torch {torch.__version__}, device {device}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    if "fit" not in args.skip:
        bench_fit(args, device)
    if "density" not in args.skip:
        bench_density_and_sampling(args, device)
    if "compress" not in args.skip:
        bench_compress(args, device)


if __name__ == "__main__":
    main()
