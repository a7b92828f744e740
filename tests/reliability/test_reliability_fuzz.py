"""Property-based fuzzing (hypothesis) of PSA, `em_step`, the segmentation metrics, the aggregate
posterior and the checkpoint reader: random shapes, scales, masks and corrupted bytes. The only
exceptions allowed are our own clear ones; every output is finite and keeps its invariants.

Example counts (a profile per run, see `_fuzz`): each property runs ``FAST`` examples in the
fast suite (``make test-fast``: ``-m "not slow"``) and ``THOROUGH`` (1,000) in its ``slow``
twin, which ``make test`` runs; ``PROBSLOT_FUZZ_EXAMPLES=N`` sets the thorough count (e.g.
10000 for a long hunt). Runs are derandomised (the same examples every time, so CI is stable);
``PROBSLOT_FUZZ_RANDOM=1`` explores new ones, and a failure prints the seed to replay it.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import adjusted_rand_score

from probslot.metrics import ari, fg_ari
from probslot.nn import GROUPINGS
from probslot.nn.functional import em_step
from probslot.posterior import AggregatePosterior
from probslot.training import AtomicCheckpointIO, CheckpointError, load_checkpoint
from probslot.training.checkpoint import probslot_section

FAST = 25
THOROUGH = int(os.environ.get("PROBSLOT_FUZZ_EXAMPLES", "1000"))
#: which properties ran how many examples (printed by the count test at the end of a run)
SEEN: dict[str, int] = {}


def _fuzz(**strategies: st.SearchStrategy[Any]) -> Callable[[Callable[..., None]], Any]:
    """Turn a property into two tests: ``test_<name>`` (FAST examples) and ``test_<name>_thorough``
    (THOROUGH examples, marked slow). Returns the pair; bind both at module level."""

    def wrap(prop: Callable[..., None]) -> Any:
        def make(examples: int, slow: bool) -> Callable[..., None]:
            key = prop.__name__ + ("_thorough" if slow else "")

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=not os.environ.get("PROBSLOT_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            )
            @given(**strategies)
            def test(**kwargs: Any) -> None:
                SEEN[key] = SEEN.get(key, 0) + 1
                prop(**kwargs)

            test.__name__ = f"test_{key}"
            return pytest.mark.slow(test) if slow else test

        return make(FAST, False), make(THOROUGH, True)

    return wrap


def _scaled(data: st.DataObject, shape: tuple[int, ...], scale: float, kind: str) -> torch.Tensor:
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    g = torch.Generator().manual_seed(seed)
    if kind == "constant":
        return torch.full(shape, scale)
    if kind == "onehot":
        x = torch.zeros(shape)
        x[..., 0] = scale
        return x
    return torch.randn(shape, generator=g) * scale


SCALE = st.integers(-4, 4).map(lambda e: 10.0**e)
KIND = st.sampled_from(["normal", "constant", "onehot"])
PSA_OPTIONS = st.sampled_from(
    [
        ("psa", {}),
        ("psa", {"standardize": True}),
        ("psa", {"temperature": 4.0, "prune_tau": 0.1}),
        ("psa", {"variance": "map"}),
        ("psa-proj", {"merge_dist": 1.0}),
        ("psa-proj", {"standardize": True, "temperature": 2.0}),
    ]
)


# --------------------------------------------------------------------------- PSA
@_fuzz(
    data=st.data(),
    b=st.integers(1, 3),
    n=st.integers(1, 12),
    k=st.integers(1, 5),
    dim=st.integers(2, 7),
    scale=SCALE,
    kind=KIND,
    options=PSA_OPTIONS,
    use_mask=st.booleans(),
    poison=st.sampled_from([None, None, None, "nan", "inf"]),
)
def psa_module(data, b, n, k, dim, scale, kind, options, use_mask, poison) -> None:
    name, kwargs = options
    module = GROUPINGS.build(name, num_slots=k, dim=dim, **kwargs).eval()
    x = _scaled(data, (b, n, dim), scale, kind)
    mask = None
    if use_mask:
        bits = data.draw(st.lists(st.booleans(), min_size=b * n, max_size=b * n), label="mask")
        mask = torch.tensor(bits).reshape(b, n)
        mask[:, 0] = True  # at least one real token per image
    if poison is not None:
        x[0, 0, 0] = float(poison)  # a real token (row 0 is never masked)
        with pytest.raises(ValueError, match="inputs must be finite; got NaN or Inf"):
            module(x, mask=mask)
        return
    with torch.no_grad():
        out = module(x, mask=mask)
    assert all(bool(torch.isfinite(t).all()) for t in (out.mu, out.var, out.pi, out.attn))
    assert bool((out.var > 0).all())
    torch.testing.assert_close(out.pi.sum(-1), torch.ones(b), atol=1e-4, rtol=0)
    if mask is not None and bool((~mask).any()):
        # padded tokens do not matter, whatever they hold (eval mode: the fixed slot noise)
        garbage = x.masked_fill(~mask.unsqueeze(-1), float("nan"))
        with torch.no_grad():
            again = module(garbage, mask=mask)
        torch.testing.assert_close(again.mu, out.mu)
        torch.testing.assert_close(again.pi, out.pi)


test_psa_module, test_psa_module_thorough = psa_module


# --------------------------------------------------------------------------- em_step
@_fuzz(
    data=st.data(),
    b=st.integers(1, 3),
    n=st.integers(1, 12),
    k=st.integers(1, 5),
    d=st.integers(1, 6),
    scale=SCALE,
    var_scale=SCALE,
    kind=KIND,
    variance=st.sampled_from(["mle", "map"]),
    temperature=st.sampled_from([1.0, 0.5, 5.0]),
    use_mask=st.booleans(),
)
def em_step_update(data, b, n, k, d, scale, var_scale, kind, variance, temperature, use_mask):
    keys = _scaled(data, (b, n, d), scale, kind)
    mean = _scaled(data, (b, k, d), scale, "normal")
    var = torch.full((b, k, d), var_scale)
    pi = torch.softmax(_scaled(data, (b, k), 3.0, "normal"), -1)
    mask = None
    if use_mask:
        bits = data.draw(st.lists(st.booleans(), min_size=b * n, max_size=b * n), label="mask")
        mask = torch.tensor(bits).reshape(b, n)
        mask[:, -1] = True
    step = em_step(
        keys,
        keys,
        mean,
        var,
        pi.log(),
        mask,
        variance=variance,
        prev_mu=mean if variance == "map" else None,
        temperature=temperature,
    )
    for name in ("mu", "var", "pi", "attn"):
        value = getattr(step, name)
        assert bool(torch.isfinite(value).all()), name
    assert bool((step.var > 0).all())
    torch.testing.assert_close(
        step.pi.sum(-1), torch.ones(b, dtype=step.pi.dtype), atol=1e-4, rtol=0
    )


test_em_step, test_em_step_thorough = em_step_update


# --------------------------------------------------------------------------- metrics
@_fuzz(
    data=st.data(),
    b=st.integers(1, 3),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    pred_labels=st.integers(1, 6),
    true_labels=st.integers(1, 5),
)
def segmentation_metrics(data, b, h, w, pred_labels, true_labels) -> None:
    """ARI and FG-ARI against sklearn's adjusted_rand_score (the oracle), image by image."""
    n = b * h * w
    pred = torch.tensor(
        data.draw(st.lists(st.integers(0, pred_labels - 1), min_size=n, max_size=n))
    )
    true = torch.tensor(
        data.draw(st.lists(st.integers(0, true_labels - 1), min_size=n, max_size=n))
    )
    pred, true = pred.reshape(b, h, w), true.reshape(b, h, w)
    got_ari, got_fg = ari(pred, true), fg_ari(pred, true)
    for i in range(b):
        t, p = true[i].flatten().numpy(), pred[i].flatten().numpy()
        assert got_ari[i].item() == pytest.approx(adjusted_rand_score(t, p), abs=1e-9)
        fg = t > 0
        if fg.any():
            assert got_fg[i].item() == pytest.approx(adjusted_rand_score(t[fg], p[fg]), abs=1e-9)
        else:
            assert math.isnan(got_fg[i].item())  # no foreground: nothing to score


test_segmentation_metrics, test_segmentation_metrics_thorough = segmentation_metrics


# --------------------------------------------------------------------------- aggregate posterior
@_fuzz(
    data=st.data(),
    m=st.integers(1, 6),
    k=st.integers(1, 4),
    d=st.integers(1, 5),
    scale=SCALE,
    var_scale=st.integers(-4, 2).map(lambda e: 10.0**e),
    dead=st.booleans(),
    cut=st.integers(1, 5),
)
def aggregate_posterior(data, m, k, d, scale, var_scale, dead, cut) -> None:
    mu = _scaled(data, (m, k, d), scale, "normal")
    var = _scaled(data, (m, k, d), 1.0, "normal").abs().add(0.1) * var_scale
    pi = torch.softmax(_scaled(data, (m, k), 2.0, "normal"), -1)
    if dead and k > 1:  # a slot with π = 0 (pruned) in every image
        pi[:, 0] = 0.0
        pi = pi / pi.sum(-1, keepdim=True)
    q = AggregatePosterior(mu, var, pi, {"num_slots": k})
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    z = q.sample(7, generator=g)
    assert z.shape == (7, d) and bool(torch.isfinite(z).all())
    logp = q.log_prob(z)
    assert bool(torch.isfinite(logp).all())
    # merging any split of the images is exact
    c = min(cut, m - 1) if m > 1 else 0
    if c > 0:
        merged = AggregatePosterior.merge([q.subset(slice(0, c)), q.subset(slice(c, m))])
        assert torch.equal(merged.mu, mu) and torch.equal(merged.pi, pi)
        torch.testing.assert_close(merged.log_prob(z), logp, rtol=1e-6, atol=1e-5)
    with tempfile.TemporaryDirectory() as tmp:
        back = AggregatePosterior.load(q.save(Path(tmp) / "q.safetensors"))
    assert torch.equal(back.mu, mu) and torch.equal(back.var, var) and torch.equal(back.pi, pi)


test_aggregate_posterior, test_aggregate_posterior_thorough = aggregate_posterior


# --------------------------------------------------------------------------- damaged bytes
#: the damage a property applies to a good file: where ∈ [0, 1] picks the byte
DAMAGE = dict(
    damage=st.sampled_from(["truncate", "flip", "splice"]),
    where=st.floats(0.0, 1.0),
    byte=st.integers(1, 255),
    junk=st.binary(min_size=1, max_size=64),
)


def _damaged(good: bytes, damage: str, where: float, byte: int, junk: bytes) -> bytes:
    """`good` cut at, XOR-ed at (with `byte`) or spliced with `junk` at one position."""
    at = min(int(where * len(good)), len(good) - 1)
    if damage == "truncate":
        return good[:at]
    if damage == "flip":
        return good[:at] + bytes([good[at] ^ byte]) + good[at + 1 :]
    return good[:at] + junk + good[at:]


# --------------------------------------------------------------------------- checkpoint bytes
_CKPT: dict[str, bytes] = {}


def _checkpoint_bytes() -> bytes:
    if "b" not in _CKPT:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "last.ckpt"
            ckpt = {
                "global_step": 3,
                "state_dict": {"w": torch.arange(64.0), "b": torch.ones(3, dtype=torch.long)},
                "probslot": probslot_section(batches_seen=3),
            }
            AtomicCheckpointIO().save_checkpoint(ckpt, path)
            _CKPT["b"] = path.read_bytes()
    return _CKPT["b"]


@_fuzz(**DAMAGE)
def checkpoint_bytes(damage, where, byte, junk) -> None:
    """A damaged checkpoint is refused with CheckpointError, or (when the damage misses
    everything that is read) loads unchanged; never another exception."""
    bad = _damaged(_checkpoint_bytes(), damage, where, byte, junk)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "last.ckpt"
        path.write_bytes(bad)
        try:
            loaded = load_checkpoint(path)
        except CheckpointError as err:
            assert str(path) in str(err)
            return
    assert loaded["global_step"] == 3
    assert torch.equal(loaded["state_dict"]["w"], torch.arange(64.0))


test_checkpoint_bytes, test_checkpoint_bytes_thorough = checkpoint_bytes


# --------------------------------------------------------------------------- reader bytes
_TFR: dict[bool, bytes] = {}


def _tfrecord_bytes(compress: bool) -> bytes:
    """A Tetrominoes TFRecord of 3 scenes in the exact DeepMind layout (tests/format_fixtures)."""
    if compress not in _TFR:
        from format_fixtures import write_deepmind

        with tempfile.TemporaryDirectory() as tmp:
            path, _ = write_deepmind(Path(tmp), "tetrominoes", 3, seed=5, compress=compress)
            _TFR[compress] = path.read_bytes()
    return _TFR[compress]


@_fuzz(compress=st.booleans(), **DAMAGE)
def tfrecord_reader_bytes(compress, damage, where, byte, junk) -> None:
    """A damaged TFRecord (GZIP or not) read through the real reader either yields records of
    the contract's shapes or raises DataFormatError naming the file; never another exception,
    never a silently wrong record count."""
    from probslot.data.readers import READERS, DataFormatError

    bad = _damaged(_tfrecord_bytes(compress), damage, where, byte, junk)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tetrominoes_train.tfrecords"
        path.write_bytes(bad)
        try:
            records = list(READERS.get("tetrominoes")(path).records())
        except DataFormatError as err:
            assert str(path) in str(err) or path.name in str(err)
            return
    if damage == "truncate" and not compress:
        # an uncompressed file cut exactly between records is a shorter valid file (TFRecord
        # has no record count): the records before the cut, intact (0 bytes is an error)
        assert 0 < len(records) < 3
    else:
        # the damage missed everything that is read (e.g. a flip in GZIP padding): all 3 scenes
        assert len(records) == 3
    for record in records:
        assert record.image.dtype.name == "uint8" and record.image.shape[-1] == 3


test_tfrecord_reader_bytes, test_tfrecord_reader_bytes_thorough = tfrecord_reader_bytes


@pytest.mark.slow
def test_zz_every_fuzzed_function_ran_its_examples() -> None:
    """Runs last in this module (pytest keeps file order): the thorough twins ran at least
    THOROUGH examples each (hypothesis would stop early only if it ran out of distinct ones)."""
    thorough = {k: v for k, v in SEEN.items() if k.endswith("_thorough")}
    if not thorough:
        pytest.skip("the thorough fuzz tests did not run in this session")
    print("hypothesis examples per fuzzed function:", thorough)
    twins = [n for n in globals() if n.startswith("test_") and n.endswith("_thorough")]
    assert len(thorough) == len(twins) == 6  # every fuzzed function's thorough twin ran
    for name, count in thorough.items():
        assert count >= THOROUGH, (name, count)
