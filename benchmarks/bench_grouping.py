"""Speed and peak memory of the grouping modules and of `em_step` (one run, ratios printed).

Measures forward+backward of
  * PSA (``ProbabilisticSlotAttention`` with its defaults: Alg. 1, no GRU/MLP) vs SA (``SlotAttention``
    with its defaults: GRU + residual MLP), plus PSA base (Alg. 2) and PSA-Proj with the authors'
    refinements (GRU + MLP + slot LayerNorm) for reference;
  * ``em_step`` vs a dense formulation that materialises (b, k, n, d) tensors, as the authors'
    code computes the E- and M-step.
at the paper's CLEVR token grid: b=32, n=1024 (32×32), D=d=64, K=7, T=3.

Each case runs in a fresh subprocess so that peak memory is its own: on CPU the peak is the
growth of the resident-set high-water mark (``ru_maxrss``) during the first forward+backward,
over a baseline taken after inputs and parameters exist; on CUDA it is
``torch.cuda.max_memory_allocated`` over the same baseline. Time is the median of ``--repeats``
forward+backward passes after one warm-up, measured in one process with the cases interleaved
round-robin, so that load from other processes on a shared machine affects every case alike.

    python benchmarks/bench_grouping.py                       # CPU, float32, 1 thread
    python benchmarks/bench_grouping.py --threads 0           # CPU, torch's default threads
    python benchmarks/bench_grouping.py --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

CASES: dict[str, str] = {
    "sa": "SA (defaults: GRU + MLP)",
    "psa": "PSA-Proj defaults (Alg. 1)",
    "psa-base": "PSA base (Alg. 2)",
    "psa-authors": "PSA-Proj + GRU/MLP/LN (authors)",
    "em_step": "em_step (matmul, log-space)",
    "em_dense": "dense (b,k,n,d) EM step",
}


def dense_em_step(keys, values, qmean, var, log_pi):
    """Reference EM step that builds (b, k, n, d) tensors (the formulation `em_step` avoids)."""
    diff = keys[:, None] - qmean[:, :, None]  # (b, k, n, d)
    log_norm = -0.5 * (
        (diff.square() / var[:, :, None]).sum(-1)
        + var.log().sum(-1, keepdim=True)
        + keys.shape[-1] * math.log(2 * math.pi)
    )  # (b, k, n)
    attn = torch.softmax(log_pi[..., None] + log_norm, dim=1)
    nk = attn.sum(-1)  # (b, k)
    attn_hat = attn / nk[..., None]
    mu = torch.einsum("bkn,bnd->bkd", attn_hat, values)
    new_var = (attn_hat[..., None] * (values[:, None] - mu[:, :, None]).square()).sum(2)
    return mu, new_var.clamp_min(1e-4), nk / keys.shape[1], attn


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _peak_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    # ru_maxrss is in KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _make_case(case: str, a: argparse.Namespace) -> Callable[[], None]:
    from probslot.nn import build_grouping, em_step

    dev = torch.device(a.device)
    b, n, d, k = a.batch, a.tokens, a.dim, a.slots
    amp_dtype = torch.bfloat16 if a.dtype == "bf16" else None

    def autocast():
        return torch.autocast(a.device, dtype=amp_dtype, enabled=amp_dtype is not None)

    if case in ("sa", "psa", "psa-base", "psa-authors"):
        name, opts = {
            "sa": ("sa", {}),
            "psa": ("psa-proj", {}),
            "psa-base": ("psa", {}),
            "psa-authors": ("psa-proj", {"gru": True, "mlp": True, "norm_slots": True}),
        }[case]
        module = build_grouping(name, k, d, iters=a.iters, **opts).to(dev)
        x = torch.randn(b, n, d, device=dev, requires_grad=True)

        def run() -> None:
            with autocast():
                out = module(x)
                loss = out.slots.float().square().mean() + out.attn.float().mean()
            loss.backward()

        return run

    g = torch.Generator(device="cpu").manual_seed(0)
    tensors = [
        torch.randn(b, n, d, generator=g),  # keys
        torch.randn(b, n, d, generator=g),  # values
        torch.randn(b, k, d, generator=g),  # query means
        torch.rand(b, k, d, generator=g) + 0.5,  # variances
        torch.full((b, k), -math.log(k)),  # log pi
    ]
    args = [t.to(dev).requires_grad_(True) for t in tensors]
    fn = em_step if case == "em_step" else dense_em_step

    def run_em() -> None:
        with autocast():
            out = fn(*args)
            mu, var, pi, attn = (out.mu, out.var, out.pi, out.attn) if case == "em_step" else out
            loss = mu.float().square().mean() + var.float().mean() + attn.float().mean()
        loss.backward()

    return run_em


def peak_memory_worker(case: str, a: argparse.Namespace) -> dict[str, float]:
    """Run in a fresh process: peak memory of the first forward+backward of one case."""
    torch.manual_seed(0)
    if a.threads:
        torch.set_num_threads(a.threads)
    run = _make_case(case, a)
    _sync(a.device)
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if a.device == "cuda" else _peak_bytes(a.device)
    run()
    _sync(a.device)
    return {"peak_mib": (_peak_bytes(a.device) - base) / 2**20}


def time_cases(cases: list[str], a: argparse.Namespace) -> dict[str, float]:
    """Median fwd+bwd seconds per case, measured round-robin so load changes hit all alike."""
    torch.manual_seed(0)
    if a.threads:
        torch.set_num_threads(a.threads)
    runs = {c: _make_case(c, a) for c in cases}
    for run in runs.values():  # warm-up
        run()
    times: dict[str, list[float]] = {c: [] for c in cases}
    for _ in range(a.repeats):
        for c, run in runs.items():
            _sync(a.device)
            t0 = time.perf_counter()
            run()
            _sync(a.device)
            times[c].append(time.perf_counter() - t0)
    return {c: statistics.median(t) for c, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="bf16 = autocast")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--slots", type=int, default=7)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared small CPU, extra threads contend with "
        "other processes and make one-run ratios unreproducible; 0 = torch default)",
    )
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of cases")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.threads < 0:
        p.error(f"--threads must be >= 0; got {a.threads}")
    for name in ("batch", "tokens", "dim", "slots", "iters", "repeats"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be >= 1; got {getattr(a, name)}")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda requested but torch.cuda.is_available() is False")

    if a.worker is not None:
        print(json.dumps(peak_memory_worker(a.worker, a)))
        return

    cases = [c for c in a.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    passthrough = [
        f"--device={a.device}",
        f"--dtype={a.dtype}",
        f"--batch={a.batch}",
        f"--tokens={a.tokens}",
        f"--dim={a.dim}",
        f"--slots={a.slots}",
        f"--iters={a.iters}",
        f"--repeats={a.repeats}",
        f"--threads={a.threads}",
    ]
    print(
        f"# bench_grouping: device={a.device} dtype={a.dtype} b={a.batch} n={a.tokens} "
        f"D=d={a.dim} K={a.slots} T={a.iters} threads={a.threads or torch.get_num_threads()} "
        f"repeats={a.repeats} torch={torch.__version__}",
        flush=True,
    )
    results: dict[str, dict[str, float]] = {}
    for i, case in enumerate(cases, 1):
        print(f"[{i}/{len(cases)}] peak memory of {case} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), f"--worker={case}", *passthrough],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            sys.exit(f"case {case} failed:\n{proc.stderr}")
        results[case] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"timing {len(cases)} cases x {a.repeats} round-robin repeats ...", file=sys.stderr)
    for case, t in time_cases(cases, a).items():
        results[case]["time_s"] = t

    print("\n| case | fwd+bwd time (ms) | peak memory (MiB) |\n|---|---:|---:|")
    for case, r in results.items():
        print(f"| {CASES[case]} | {1e3 * r['time_s']:.1f} | {r['peak_mib']:.1f} |")
    ratios = [
        ("psa", "sa", "PSA / SA", "<= 1.3"),
        ("psa-base", "sa", "PSA base / SA", "-"),
        ("psa-authors", "sa", "PSA-Proj authors / SA", "-"),
        ("em_dense", "em_step", "dense / em_step", ">= 10 (time)"),
    ]
    print("\n| ratio | time | memory | target |\n|---|---:|---:|---|")
    for num, den, label, target in ratios:
        if num in results and den in results:
            rn, rd = results[num], results[den]
            mem = rn["peak_mib"] / rd["peak_mib"] if rd["peak_mib"] > 0 else float("nan")
            print(f"| {label} | {rn['time_s'] / rd['time_s']:.2f}x | {mem:.2f}x | {target} |")


if __name__ == "__main__":
    main()
