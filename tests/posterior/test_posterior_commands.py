"""`probslot aggregate / sample / prune`: the typed command functions and the CLI on run directories.

Fast tests use a run directory written by hand (config.yaml + untrained model.safetensors, which
is all `load_model` needs); the end-to-end test trains a tiny run with the training API (slow).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from probslot.cli import main
from probslot.config import RunConfig, dump_config
from probslot.io import RunPaths, load_model, save_model_weights
from probslot.models import build_model
from probslot.posterior import AggregatePosterior, model_fingerprint
from probslot.posterior.commands import (
    POSTERIOR_FILE,
    aggregate,
    demo_posterior,
    file_sha256,
    prune,
    sample,
    sample_grid,
    split_loader,
)
from tiny_runs import tiny_config  # noqa: E402

TINY = tiny_config(
    {
        "data": {"num_val": 4, "num_test": 7, "batch_size": 3},
        "model": {"num_slots": 4, "decoder_kwargs": {"channels": [6, 7]}},
    }
)


def make_run(root: Path, name: str = "tiny", **model_overrides) -> Path:
    """A run directory with config.yaml and (untrained, seeded) model.safetensors."""
    data = copy.deepcopy(TINY)
    data["model"].update(model_overrides)
    data["trainer"].update(output_dir=str(root), run_name=name)
    cfg = RunConfig.from_dict(data)
    paths = RunPaths(root / name)
    paths.root.mkdir(parents=True)
    paths.config.write_text(dump_config(cfg))
    torch.manual_seed(0)
    save_model_weights(build_model(cfg.model), paths.weights)
    return paths.root


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path)


# ---------------------------------------------------------------------- aggregate
def test_aggregate_writes_posterior_with_metadata(run_dir, capsys):
    path = aggregate(str(run_dir), split="train", progress=False)
    assert path == run_dir / POSTERIOR_FILE and path.is_file()
    q = AggregatePosterior.load(path)
    assert (q.num_images, q.num_slots, q.dim) == (11, 4, 5)
    meta = q.metadata
    assert meta["model_hash"] == model_fingerprint(load_model(run_dir))
    assert meta["dataset"] == "sprites" and meta["split"] == "train" and meta["num_images"] == 11
    assert str(path) in capsys.readouterr().out
    # the posterior is the model's: the components equal encode() on the split (seeded alike)
    model = load_model(run_dir)
    torch.manual_seed(1)
    q2 = AggregatePosterior.fit(model, split_loader(_cfg(run_dir), "train"), progress=False)
    torch.manual_seed(1)  # iterating a DataLoader draws its base seed: take the batch after seeding
    batch = next(iter(split_loader(_cfg(run_dir), "train")))
    assert batch["image"].shape == (3, 3, 16, 16)
    with torch.no_grad():
        first = model.encode(batch["image"])
    torch.testing.assert_close(q2.pi[:3], first.pi)


def test_aggregate_max_images_and_other_split(run_dir):
    q = AggregatePosterior.load(aggregate(str(run_dir), split="test", max_images=5, progress=False))
    assert q.num_images == 5 and q.metadata["split"] == "test"


def test_aggregate_bad_input(run_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="run directory .*missing.* does not exist"):
        aggregate(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"unknown split 'tset'\. Did you mean 'test'\?"):
        aggregate(str(run_dir), split="tset")
    with pytest.raises(ValueError, match=r"max_images must be an integer >= 1; got 0"):
        aggregate(str(run_dir), max_images=0)
    with pytest.raises(TypeError, match=r"max_images must be an integer >= 1; got 2.5 \(float\)"):
        aggregate(str(run_dir), max_images=2.5)
    sa = make_run(tmp_path, "sa", preset="SA")
    with pytest.raises(ValueError, match=r"slot-attention model .* SA has no posterior"):
        aggregate(str(sa))
    assert not (sa / POSTERIOR_FILE).exists()


# ---------------------------------------------------------------------- sample
def test_sample_writes_grid_of_scenes_and_slots(run_dir, tmp_path, capsys):
    aggregate(str(run_dir), progress=False)
    out = sample(str(run_dir), num=3, out=str(tmp_path / "s.png"), seed=2)
    assert out == tmp_path / "s.png"
    img = Image.open(out)
    # 16 px images are upscaled 4× to 64 px; rows = scenes, columns = scene + 4 slots (+ gap);
    # the grid is drawn pixel for pixel under a title, column headers and each slot's π
    pad = 2
    w, h = img.size
    assert w >= 5 * 64 + 6 * pad + 3 * pad and h >= 3 * 64 + 4 * pad + 90
    assert str(out) in capsys.readouterr().out
    # same seed → same picture; default output inside the run directory
    again = sample(str(run_dir), num=3, out=str(tmp_path / "t.png"), seed=2)
    assert again.read_bytes() == out.read_bytes()
    default = sample(str(run_dir), num=2, num_slots=2)
    assert default == run_dir / "samples.png"
    w2, h2 = Image.open(default).size
    assert h2 == h - 64 - pad and w2 >= 3 * 64 + 4 * pad + 3 * pad  # one scene less


def test_sample_grid_layout_and_values():
    scenes = torch.zeros(2, 3, 3, 5)  # pairwise-distinct h, w
    scenes[1] = 1.0
    parts = torch.full((2, 4, 3, 3, 5), 0.5)
    grid = sample_grid(scenes, parts, scale=2, pad=1)
    assert grid.shape == (2 * 6 + 3, 5 * 10 + 6 + 3, 3) and grid.dtype == torch.uint8
    assert (grid[1:7, 1:11] == 0).all() and (grid[8:14, 1:11] == 255).all()
    assert (grid[1:7, 1 + 10 + 1 + 3 : 1 + 10 + 1 + 3 + 10] == 128).all()  # first slot of row 0
    plain = sample_grid(torch.rand(5, 3, 3, 5))  # no parts: a near-square grid, 3 columns
    assert plain.shape == (2 * 3 + 3 * 2, 3 * 5 + 4 * 2, 3)


def test_sample_bad_input(run_dir, tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"posterior.safetensors. does not exist: .* first with `probslot aggregate",
    ):
        sample(str(run_dir))
    with pytest.raises(ValueError, match="num must be an integer >= 1; got 0"):
        sample(str(run_dir), num=0)
    with pytest.raises(TypeError, match=r"num must be an integer >= 1; got True \(bool\)"):
        sample(str(run_dir), num=True)
    with pytest.raises(ValueError, match="seed must be an integer >= 0; got -1"):
        sample(str(run_dir), seed=-1)
    with pytest.raises(ValueError, match=r"out must be a \.png file; got 'x.jpg'"):
        sample(str(run_dir), out="x.jpg")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sample(str(tmp_path / "nope"))
    sa = make_run(tmp_path, "sa", preset="SA")
    with pytest.raises(ValueError, match="SA has no posterior"):
        sample(str(sa))
    # a posterior fitted on other weights is refused
    aggregate(str(run_dir), max_images=3, progress=False)
    torch.manual_seed(9)
    save_model_weights(build_model(_cfg(run_dir).model), run_dir / "model.safetensors")
    with pytest.raises(ValueError, match="fitted with other weights .* Re-run `probslot aggregate"):
        sample(str(run_dir))


def _cfg(run_dir: Path):
    from probslot.io import load_run_config

    return load_run_config(run_dir)


# ---------------------------------------------------------------------- model_hash
def _fit_and_save(model: torch.nn.Module, run_dir: Path) -> AggregatePosterior:
    """A posterior fitted through the Python API, saved where the commands look for it."""
    q = AggregatePosterior.fit(
        model, split_loader(_cfg(run_dir), "train"), max_images=3, progress=False
    )
    q.save(run_dir / POSTERIOR_FILE)
    return q


def _evaluate_args(run_dir: Path) -> list[str]:
    # the train split (11 images) is enough for the identifiability fit from 5-d slots
    return ["evaluate", "--run_dir", str(run_dir), "--split", "train", "--contrast_images", "0"]


def test_a_posterior_fitted_through_the_python_api_is_accepted_by_sample_and_evaluate(
    run_dir, tmp_path, capsys
):
    # Before model_hash had one meaning, fit recorded a state-dict hash and the commands
    # compared it with the sha256 of model.safetensors, so sample refused this posterior.
    q = _fit_and_save(load_model(run_dir), run_dir)
    assert q.metadata["model_hash"] == model_fingerprint(load_model(run_dir))
    png = tmp_path / "api.png"
    assert main(["sample", "--run_dir", str(run_dir), "--num", "2", "--out", str(png)]) == 0
    assert png.is_file()
    assert main([*_evaluate_args(run_dir), "--no_progress"]) == 0
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["posterior"]["samples"] > 0
    assert not any("model_hash" in note for note in result["notes"])
    assert "error" not in capsys.readouterr().err


def test_a_posterior_of_another_model_is_refused_by_sample_and_evaluate(run_dir, capsys):
    torch.manual_seed(9)  # the same architecture, other weights
    _fit_and_save(build_model(_cfg(run_dir).model), run_dir)
    message = r"fitted with other weights than model\.safetensors .* the run was retrained since"
    with pytest.raises(ValueError, match=message):
        sample(str(run_dir), num=2)
    assert main([*_evaluate_args(run_dir), "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert "fitted with other weights" in err and "Re-run `probslot aggregate" in err
    assert not (run_dir / "eval.json").exists()  # refused before any work


def test_a_posterior_written_with_the_file_sha256_as_model_hash_still_loads(run_dir, capsys):
    # what `probslot aggregate` wrote before: model_hash = sha256 of model.safetensors
    q = _fit_and_save(load_model(run_dir), run_dir)
    old = {**q.metadata, "model_hash": file_sha256(run_dir / "model.safetensors")}
    AggregatePosterior(q.mu, q.var, q.pi, old).save(run_dir / POSTERIOR_FILE)
    sample(str(run_dir), num=2)
    out = capsys.readouterr().out
    assert "note: posterior.safetensors records the sha256 of model.safetensors" in out
    assert out.count("note:") == 1 and "Re-run `probslot aggregate" in out
    assert main([*_evaluate_args(run_dir), "--no_progress"]) == 0
    notes = json.loads((run_dir / "eval.json").read_text())["notes"]
    assert sum("records the sha256 of model.safetensors" in n for n in notes) == 1
    # once the run is retrained, the old file hash no longer matches either
    torch.manual_seed(9)
    save_model_weights(build_model(_cfg(run_dir).model), run_dir / "model.safetensors")
    with pytest.raises(ValueError, match="fitted with other weights .* retrained since"):
        sample(str(run_dir), num=2)


# ---------------------------------------------------------------------- prune
def test_prune_writes_report_table_and_json(run_dir, capsys):
    path = prune(str(run_dir), tau=0.1, split="test", progress=False)
    assert path == run_dir / "pruning.json"
    data = json.loads(path.read_text())
    assert data["tau"] == 0.1 and data["split"] == "test" and data["num_images"] == 7
    assert data["headline_convention"] == "with_background"
    assert [r["tau"] for r in data["results"]] == [0.1]
    assert set(data["targets_met"]) == {
        "slot_count_mae<=0.5",
        "decoder_flops_saved>=40%",
        "mse_worse<=5%",
    }
    table = (run_dir / "pruning" / "sweep.md").read_text()
    assert "MAE (bg counts)" in table and "| 0.100 |" in table
    assert (run_dir / "pruning" / "sweep.csv").read_text().count("\n") == 2
    assert not (run_dir / "pruning" / "sweep.png").exists()
    out = capsys.readouterr().out
    assert "slot-count MAE" in out and "with_background, headline" in out and str(path) in out


def test_prune_sweep_writes_plot(run_dir):
    prune(str(run_dir), tau=0.07, sweep=True, max_images=4, progress=False)
    data = json.loads((run_dir / "pruning.json").read_text())
    taus = [r["tau"] for r in data["results"]]
    assert taus == [0.0, 0.01, 0.02, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3]
    assert data["num_images"] == 4
    assert data["results"][0]["decoder_flops_saved"] == 0.0
    png = run_dir / "pruning" / "sweep.png"
    assert Image.open(png).format == "PNG"


def test_prune_defaults_to_the_trained_prune_tau_inside_em(tmp_path):
    kwargs = dict(TINY["model"].get("grouping_kwargs") or {}, prune_tau=0.2)
    ard = make_run(tmp_path, "ard", grouping_kwargs=kwargs)
    data = json.loads(prune(str(ard), max_images=4, progress=False).read_text())
    assert data["tau"] == 0.2 and data["in_em"] is True
    assert data["merge_dist"] == 0.0 and data["prune_start"] == 1 and data["seed"] is None
    # the in-EM settings at inference go into the report; the model keeps its own
    data = json.loads(
        prune(
            str(ard), max_images=4, progress=False, merge_dist=0.5, prune_start=2, seed=3
        ).read_text()
    )
    assert (data["merge_dist"], data["prune_start"], data["seed"]) == (0.5, 2, 3)
    from probslot.nn.extensions import ARDPrune, find_extension

    assert find_extension(load_model(ard).grouping.extensions, ARDPrune).start == 1
    # a plain model keeps the paper's threshold mode and the 0.05 default
    plain = make_run(tmp_path, "plain")
    data = json.loads(prune(str(plain), max_images=4, progress=False).read_text())
    assert data["tau"] == 0.05 and data["in_em"] is False


def test_prune_takes_its_defaults_from_the_run_configs_prune_section(tmp_path):
    run = make_run(tmp_path, "cfg")
    cfg_path = run / "config.yaml"
    data = yaml.safe_load(cfg_path.read_text())
    data["prune"] = {"tau": 0.1, "merge_dist": 0.5, "prune_start": 2}
    cfg_path.write_text(yaml.safe_dump(data))
    report = json.loads(prune(str(run), max_images=4, progress=False).read_text())
    assert (report["tau"], report["merge_dist"], report["prune_start"]) == (0.1, 0.5, 2)
    assert report["in_em"] is True  # merging needs in-EM mode, so it is picked
    # a flag overrides its field only
    report = json.loads(prune(str(run), tau=0.2, max_images=4, progress=False).read_text())
    assert (report["tau"], report["merge_dist"], report["prune_start"]) == (0.2, 0.5, 2)


@pytest.mark.parametrize("tau", [-0.01, 1.0])
def test_prune_rejects_tau_outside_unit_interval(run_dir, tau):
    with pytest.raises(ValueError, match=r"tau must be a number >= 0 and < 1"):
        prune(str(run_dir), tau=tau)
    assert not (run_dir / "pruning.json").exists()


def test_prune_bad_input(run_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prune(str(tmp_path / "nope"))
    sa = make_run(tmp_path, "sa", preset="SA")
    with pytest.raises(ValueError, match=r"slot-attention model .* ARD pruning"):
        prune(str(sa))
    empty = make_run(tmp_path, "noval")
    cfg = (empty / "config.yaml").read_text().replace("num_val: 4", "num_val: 0")
    (empty / "config.yaml").write_text(cfg)
    with pytest.raises(ValueError, match=r"val split is empty \(data.num_val = 0"):
        prune(str(empty), split="val")


def test_demo_posterior_runs_all_three_steps(run_dir, tmp_path):
    written = demo_posterior(run_dir, max_images=4, num_samples=2, progress=False)
    assert written == {
        "posterior": run_dir / POSTERIOR_FILE,
        "samples": run_dir / "samples.png",
        "pruning": run_dir / "pruning.json",
    }
    assert AggregatePosterior.load(written["posterior"]).num_images == 4
    assert (run_dir / "pruning" / "sweep.png").is_file()
    assert demo_posterior(make_run(tmp_path, "sa", preset="SA")) == {}


# ---------------------------------------------------------------------- CLI
def test_cli_errors_are_one_line(run_dir, tmp_path, capsys):
    assert main(["sample", "--run_dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("probslot: error: ") and "probslot aggregate" in err
    assert err.count("\n") == 1
    assert main(["prune", "--run_dir", str(run_dir), "--tau", "1.5"]) == 2
    assert "tau must be a number >= 0 and < 1" in capsys.readouterr().err
    assert main(["aggregate", "--run_dir", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_end_to_end_on_a_trained_tiny_run(tmp_path, capsys):
    """Train a tiny run with the training API, then aggregate → sample → prune via the CLI."""
    from probslot.training import train

    data = copy.deepcopy(TINY)
    data["trainer"].update(output_dir=str(tmp_path / "runs"), run_name="e2e", max_steps=4)
    result = train(RunConfig.from_dict(data), progress=False)
    run = str(result.run_dir)
    assert main(["aggregate", "--run_dir", run, "--split", "train", "--no_progress"]) == 0
    q = AggregatePosterior.load(Path(run) / POSTERIOR_FILE)
    assert q.num_images == 11 and q.metadata["model_hash"] == model_fingerprint(load_model(run))
    png = tmp_path / "samples.png"
    assert main(["sample", "--run_dir", run, "--num", "4", "--out", str(png), "--seed", "3"]) == 0
    assert Image.open(png).size[1] == 4 * 64 + 5 * 2 + 105  # the grid + title and headers
    assert main(["prune", "--run_dir", run, "--tau", "0.05", "--sweep", "--no_progress"]) == 0
    report = json.loads((Path(run) / "pruning.json").read_text())
    assert report["num_slots"] == 4 and len(report["results"]) == 8
    for name in ("sweep.md", "sweep.csv", "sweep.png"):
        assert (Path(run) / "pruning" / name).is_file()
    out = capsys.readouterr().out
    assert "ARD pruning at tau=0.05" in out
