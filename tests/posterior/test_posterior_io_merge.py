"""Save/load round trips (safetensors + JSON header), merge and subset."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from probslot.posterior import AggregatePosterior, GaussianMixture, load_mixture

F64 = torch.float64


def random_posterior(m=5, k=3, d=7, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(m, k, d, generator=g).to(dtype)
    var = (0.1 + torch.rand(m, k, d, generator=g)).to(dtype)
    pi = torch.softmax(torch.randn(m, k, generator=g), -1).to(dtype)
    return mu, var, pi


META = {"model_hash": "ab12", "dataset": "sprites", "split": "train", "nested": {"a": [1, 2.5]}}


@pytest.mark.parametrize("dtype", [torch.float32, F64, torch.bfloat16])
def test_save_load_round_trip_is_bit_identical(tmp_path, dtype):
    q = AggregatePosterior(*random_posterior(dtype=dtype), metadata=META)
    path = q.save(tmp_path / "sub" / "posterior.safetensors")
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "posterior.safetensors"
    ]  # no temp left
    r = AggregatePosterior.load(path)
    for a, b in ((q.mu, r.mu), (q.var, r.var), (q.pi, r.pi), (q.weights, r.weights)):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert r.metadata == META
    assert (r.num_images, r.num_slots, r.dim) == (5, 3, 7)
    # the JSON header carries sizes and the metadata for other tools to read
    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["probslot"])
    assert header["kind"] == "AggregatePosterior"
    assert (header["num_images"], header["num_slots"], header["dim"]) == (5, 3, 7)
    assert header["metadata"]["model_hash"] == "ab12"


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "q.safetensors"
    AggregatePosterior(*random_posterior(seed=1)).save(path)
    q2 = AggregatePosterior(*random_posterior(seed=2))
    q2.save(path)
    assert torch.equal(AggregatePosterior.load(path).mu, q2.mu)
    assert len(list(tmp_path.iterdir())) == 1


def test_gaussian_mixture_round_trip_and_dispatch(tmp_path):
    w = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
    m = torch.randn(3, 2, dtype=F64)
    v = torch.rand(3, 2, dtype=F64) + 0.1
    g = GaussianMixture(w, m, v, {"num_slots": 4})
    g.save(tmp_path / "g.safetensors")
    r = GaussianMixture.load(tmp_path / "g.safetensors")
    assert type(r) is GaussianMixture
    assert torch.equal(r.weights, w) and torch.equal(r.means, m) and torch.equal(r.variances, v)
    assert r.metadata == {"num_slots": 4}
    assert r.sample_scenes(2).shape == (2, 4, 2)
    q = AggregatePosterior(*random_posterior())
    q.save(tmp_path / "q.safetensors")
    assert isinstance(load_mixture(tmp_path / "q.safetensors"), AggregatePosterior)
    with pytest.raises(ValueError, match="not an AggregatePosterior"):
        AggregatePosterior.load(tmp_path / "g.safetensors")


def test_load_rejects_mismatched_dim_and_foreign_files(tmp_path):
    q = AggregatePosterior(*random_posterior(d=7))
    path = q.save(tmp_path / "q.safetensors")
    assert AggregatePosterior.load(path, dim=7).dim == 7
    with pytest.raises(ValueError, match="7-dimensional slots but dim=11 was expected"):
        AggregatePosterior.load(path, dim=11)
    with pytest.raises(ValueError, match="7-dimensional slots but dim=11"):
        load_mixture(path, dim=11)
    with pytest.raises(FileNotFoundError, match="no posterior file"):
        AggregatePosterior.load(tmp_path / "missing.safetensors")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(ValueError, match="no 'probslot' header"):
        AggregatePosterior.load(tmp_path / "weights.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        AggregatePosterior.load(tmp_path / "junk.safetensors")


def test_load_rejects_header_shape_disagreement(tmp_path):
    q = AggregatePosterior(*random_posterior(m=5))
    header = q._header()
    header["num_images"] = 6
    save_file(
        {"mu": q.mu, "var": q.var, "pi": q.pi},
        str(tmp_path / "bad.safetensors"),
        metadata={"probslot": json.dumps(header)},
    )
    with pytest.raises(ValueError, match="disagrees with the header"):
        AggregatePosterior.load(tmp_path / "bad.safetensors")


# ---------------------------------------------------------------- merge
def test_merge_equals_building_from_concatenated_arrays():
    parts = [random_posterior(m=m, seed=s) for m, s in ((2, 0), (3, 1), (5, 2))]
    posteriors = [
        AggregatePosterior(*p, metadata={"model_hash": "h", "shard": i})
        for i, p in enumerate(parts)
    ]
    merged = AggregatePosterior.merge(posteriors)
    built = AggregatePosterior(*(torch.cat([p[j] for p in parts]) for j in range(3)))
    assert merged.num_images == 10
    for a, b in ((merged.mu, built.mu), (merged.var, built.var), (merged.pi, built.pi)):
        assert torch.equal(a, b)
    assert torch.equal(merged.weights, built.weights)  # π_ik / M_total, not / M_part
    z = torch.randn(4, 7)
    assert torch.equal(merged.log_prob(z), built.log_prob(z))
    assert merged.metadata == {"model_hash": "h"}  # keys on which parts disagree are dropped
    # log q of a merge is the image-weighted average of the parts' densities
    mix = torch.logsumexp(
        torch.stack(
            [p.log_prob(z) + torch.log(torch.tensor(p.num_images / 10)) for p in posteriors]
        ),
        0,
    )
    torch.testing.assert_close(merged.log_prob(z), mix, rtol=1e-5, atol=1e-5)


def test_merge_rejects_incompatible_parts():
    a = AggregatePosterior(*random_posterior(k=3, d=7))
    with pytest.raises(
        ValueError, match="slot dimension mismatch: part 0 has d = 7, part 1 has d = 5"
    ):
        AggregatePosterior.merge([a, AggregatePosterior(*random_posterior(k=3, d=5))])
    with pytest.raises(ValueError, match="slot count mismatch"):
        AggregatePosterior.merge([a, AggregatePosterior(*random_posterior(k=2, d=7))])
    with pytest.raises(ValueError, match="float32 on cpu but part 0"):
        AggregatePosterior.merge([a, a.to(dtype=F64)][::-1])
    with pytest.raises(ValueError, match="different models"):
        AggregatePosterior.merge(
            [
                AggregatePosterior(*random_posterior(), metadata={"model_hash": "x"}),
                AggregatePosterior(*random_posterior(), metadata={"model_hash": "y"}),
            ]
        )
    with pytest.raises(ValueError, match="at least one"):
        AggregatePosterior.merge([])
    with pytest.raises(TypeError, match="list of AggregatePosterior"):
        AggregatePosterior.merge(a)
    with pytest.raises(TypeError, match="item 1 must be an AggregatePosterior"):
        AggregatePosterior.merge([a, "b"])


def test_subset_and_to():
    q = AggregatePosterior(*random_posterior(m=5), metadata={"dataset": "d"})
    s = q.subset([4, 0])
    assert torch.equal(s.mu, q.mu[[4, 0]]) and s.metadata == {"dataset": "d"}
    assert q.subset(slice(1, 3)).num_images == 2
    assert q.to(dtype=F64).dtype == F64
    with pytest.raises(TypeError, match="floating torch.dtype"):
        q.to(dtype=torch.int32)


def test_each_file_kind_is_read_by_one_class():
    # subclasses register their kind for load_mixture; a second class may not claim one
    with pytest.raises(TypeError, match="kind 'AggregatePosterior' is already read by Aggregate"):

        class Impostor(GaussianMixture):
            _KIND = "AggregatePosterior"
