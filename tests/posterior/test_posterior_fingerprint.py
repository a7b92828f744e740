"""model_fingerprint: one hash of a model's weights, whatever file or device they came from."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from probslot.io import save_model_weights
from probslot.posterior import model_fingerprint
from probslot.posterior.fingerprint import file_sha256


class Tiny(nn.Module):
    """Weights, a buffer and a bool buffer with pairwise-distinct sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 5)
        self.b = nn.Conv2d(5, 7, 2)
        self.register_buffer("count", torch.arange(11))
        self.register_buffer("flags", torch.tensor([True, False]))


def _seeded(seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    return Tiny()


def test_fingerprint_is_that_of_the_reloaded_model_and_not_of_the_file(tmp_path):
    from safetensors.torch import load_file

    model = _seeded()
    save_model_weights(model, tmp_path / "a.safetensors")
    save_model_weights(model, tmp_path / "b.safetensors", metadata={"note": "other header"})
    # two files of the same weights: different bytes, one fingerprint
    assert file_sha256(tmp_path / "a.safetensors") != file_sha256(tmp_path / "b.safetensors")
    for name in ("a", "b"):
        reloaded = Tiny()  # other initial weights, replaced by the file's
        reloaded.load_state_dict(load_file(str(tmp_path / f"{name}.safetensors")))
        assert model_fingerprint(reloaded) == model_fingerprint(model)
    assert len(model_fingerprint(model)) == 64  # sha256 hex digest


def test_fingerprint_of_a_run_model_equals_that_of_load_model(tmp_path):
    from probslot.config import RunConfig
    from probslot.io import load_model
    from probslot.models import build_model
    from tiny_runs import tiny_config

    cfg = RunConfig.from_dict(tiny_config())
    torch.manual_seed(0)
    model = build_model(cfg.model)
    run = tmp_path / "run"
    run.mkdir()
    from probslot.config import dump_config

    (run / "config.yaml").write_text(dump_config(cfg))
    save_model_weights(model, run / "model.safetensors")
    assert model_fingerprint(load_model(run)) == model_fingerprint(model)


def test_fingerprint_changes_with_any_weight_dtype_or_name():
    model = _seeded()
    base = model_fingerprint(model)
    assert model_fingerprint(_seeded()) == base  # same weights, other instance
    with torch.no_grad():
        model.b.weight[6, 4, 1, 0] += 1e-6  # one element of one weight
    assert model_fingerprint(model) != base
    other = _seeded()
    other.count[10] = 0  # a buffer counts too
    assert model_fingerprint(other) != base
    assert model_fingerprint(_seeded().double()) != base  # dtype is part of the weights
    assert model_fingerprint(_seeded(1)) != base


def test_fingerprint_rejects_a_non_module():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module; got dict"):
        model_fingerprint({})  # type: ignore[arg-type]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fingerprint_does_not_depend_on_the_device():
    model = _seeded()
    assert model_fingerprint(model.to("cuda")) == model_fingerprint(_seeded())
