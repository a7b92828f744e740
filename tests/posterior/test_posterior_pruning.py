"""ARD pruning (paper Eq. 7): keep masks, decoding only kept slots, FLOPs, MAE, prune_analysis."""

from __future__ import annotations

import math

import pytest
import torch

from probslot.data import SpritesDataset, collate
from probslot.nn import ARDPrune, MomentMerge, with_settings
from probslot.posterior.pruning import (
    DEFAULT_TAUS,
    PruningReport,
    count_flops,
    prune_analysis,
    slot_count_mae,
)
from probslot.relevance import relevant
from tiny_runs import TINY_DECODER as DECODER
from tiny_runs import tiny_model

B, K, D, S = 3, 4, 5, 16  # batch, slots (even, for the half-kept FLOPs test), slot dim, image side


def small_model(preset: str = "PSA", **kw) -> torch.nn.Module:
    return tiny_model(preset, image_size=S, num_slots=K, slot_dim=D, **kw).eval()


def sprite_batches(num: int = 7, batch: int = B) -> list[dict]:
    ds = SpritesDataset(num, image_size=S, max_objects=2, seed=3)
    items = [ds[i] for i in range(num)]
    return [collate(items[i : i + batch]) for i in range(0, num, batch)]


# ---------------------------------------------------------------------- decoding with pruning
def test_tau_zero_changes_nothing_in_the_model_output():
    model = small_model()
    images = torch.stack([SpritesDataset(B, image_size=S, seed=1)[i]["image"] for i in range(B)])
    with torch.no_grad():
        # PSA draws its initial slots at random, so seed both passes identically
        torch.manual_seed(5)
        ref = model(images)
        keep = relevant(ref.grouping.pi, 0.0)
        assert keep.all()
        torch.manual_seed(5)
        out = model(images, keep=keep)
    assert torch.equal(out.grouping.pi, ref.grouping.pi)
    assert torch.equal(out.recon, ref.recon)
    assert torch.equal(out.masks, ref.masks)
    assert torch.equal(out.per_slot, ref.per_slot)


@pytest.mark.parametrize("preset", ["PSA", "PSA-NoA"])
def test_pruned_decoding_equals_decoding_only_the_kept_slots(preset):
    decoder_kwargs = (
        DECODER
        if preset == "PSA"
        else {"init_size": 4, "slot_channels": [6], "feature_dim": 4, "channels": [6, 7, 5]}
    )
    model = small_model(preset, decoder_kwargs=decoder_kwargs)
    torch.manual_seed(1)
    slots = torch.randn(B, K, D)
    pi = torch.softmax(torch.randn(B, K) * 2, dim=1)
    keep = relevant(pi, 0.2)
    assert not keep.all() and keep.any(1).all()
    with torch.no_grad():
        out = model.decode(slots, keep=keep)
        for i in range(B):
            ref = model.decode(slots[i : i + 1, keep[i]])
            torch.testing.assert_close(out.recon[i], ref.recon[0], rtol=1e-5, atol=1e-6)
            if out.masks is not None:
                torch.testing.assert_close(
                    out.masks[i, keep[i]], ref.masks[0], rtol=1e-5, atol=1e-6
                )
                assert (out.masks[i, ~keep[i]] == 0).all()


def test_keep_mask_really_reduces_additive_decoder_flops():
    model = small_model()
    slots = torch.randn(B, K, D)
    half = torch.zeros(B, K, dtype=torch.bool)
    half[:, : K // 2] = True
    one = torch.zeros(B, K, dtype=torch.bool)
    one[:, 0] = True
    _, full = count_flops(model.decode, slots)
    _, halved = count_flops(model.decode, slots, keep=half)
    _, single = count_flops(model.decode, slots, keep=one)
    assert full > halved > single > 0
    # every counted op of the additive decoder is per slot except the position embedding
    # (one small linear on the grid), so half the slots ≈ half the FLOPs
    assert halved / full == pytest.approx(0.5, abs=0.02)
    per_slot = (full - halved) / (B * K // 2)
    assert single == pytest.approx(full - per_slot * B * (K - 1), rel=1e-6)


# ---------------------------------------------------------------------- MAE
def test_slot_count_mae_by_hand_both_conventions():
    kept = [3, 2, 4, 1]
    objects = [2, 2, 1, 0]
    # background counts: targets 3, 3, 2, 1 → |0| + |−1| + |2| + |0| = 3 → 0.75
    assert slot_count_mae(kept, objects, "with_background") == pytest.approx(0.75)
    # objects only: targets 2, 2, 1, 0 → 1 + 0 + 3 + 1 = 5 → 1.25
    assert slot_count_mae(kept, objects, "objects_only") == pytest.approx(1.25)
    with pytest.raises(ValueError, match="equal length"):
        slot_count_mae([1, 2], [1], "objects_only")
    with pytest.raises(ValueError, match="convention must be"):
        slot_count_mae([1], [1], "bg")


# ---------------------------------------------------------------------- prune_analysis
def test_prune_analysis_matches_a_direct_computation():
    model = small_model()
    batches = sprite_batches()
    pis, objects = [], []
    torch.manual_seed(11)  # PSA's random initial slots: the analysis below redraws the same
    with torch.no_grad():
        for b in batches:
            pis.append(model.encode(b["image"]).pi)
            objects.append(b["visibility"].sum(1))
    pi, obj = torch.cat(pis), torch.cat(objects)
    # a τ strictly between two observed π values, so the result is not a rounding accident
    sorted_pi = pi[pi > 1e-3].sort().values
    tau = float((sorted_pi[3] + sorted_pi[4]) / 2)
    torch.manual_seed(11)
    report = prune_analysis(model, batches, taus=(0.0, tau), timing_repeats=1)
    assert isinstance(report, PruningReport)
    assert report.num_images == 7 and report.num_slots == K and report.additive
    keep = relevant(pi, tau)
    kept = keep.sum(1)
    r = report.at(tau)
    assert r.mean_kept == pytest.approx(kept.double().mean().item())
    assert r.mae_with_background == pytest.approx(slot_count_mae(kept, obj, "with_background"))
    assert r.mae_objects_only == pytest.approx(slot_count_mae(kept, obj, "objects_only"))
    assert report.mean_objects == pytest.approx(obj.double().mean().item())
    # the constant baseline: the best single answer, found by trying every count
    best = min((obj.double() - c).abs().mean().item() for c in range(int(obj.max()) + 2))
    assert report.constant_mae == pytest.approx(best)
    # FLOPs saved: per-image decoder FLOPs scale with kept slots (up to the position embedding)
    assert r.decoder_flops_saved == pytest.approx(1 - kept.sum().item() / (7 * K), abs=0.02)
    assert 0 < r.model_flops_saved < r.decoder_flops_saved
    # τ = 0 changes nothing
    r0 = report.at(0.0)
    assert r0.mean_kept == K and r0.decoder_flops_saved == 0.0 and r0.mse_change_pct == 0.0
    assert r0.mse == report.baseline_mse and r0.fg_ari == report.baseline_fg_ari
    assert r0.fg_ari_change == 0.0 and r0.decoder_time_saved == 0.0
    # π statistics
    assert len(report.pi_sorted_mean) == K
    assert sum(report.pi_sorted_mean) == pytest.approx(1.0, abs=1e-4)
    assert sum(report.pi_histogram) == 7 * K
    # table, CSV and JSON views
    assert report.to_markdown().count("\n") == 2 + 2
    assert report.to_csv().splitlines()[0].startswith("tau,mean_kept,mae_with_background")
    d = report.to_dict()
    assert d["results"][1]["tau"] == tau and d["headline"] == "with_background"


def test_prune_analysis_mse_of_pruned_model_matches_reference():
    model = small_model()
    batches = sprite_batches(num=4, batch=4)
    tau = 0.2
    torch.manual_seed(11)
    report = prune_analysis(model, batches, taus=(tau,), timing_repeats=1)
    images = batches[0]["image"]
    torch.manual_seed(11)
    with torch.no_grad():
        post = model.encode(images)
        keep = relevant(post.pi, tau)
        recon = model.decode(post.slots, keep=keep if not keep.all() else None).recon
        base = model.decode(post.slots).recon
    mse = (recon.double() - images.double()).square().mean().item()
    base_mse = (base.double() - images.double()).square().mean().item()
    assert report.baseline_mse == pytest.approx(base_mse, rel=1e-9)
    assert report.at(tau).mse == pytest.approx(mse, rel=1e-9)
    assert report.at(tau).mse_change_pct == pytest.approx(100 * (mse / base_mse - 1), rel=1e-6)


def test_prune_analysis_max_images_and_summary():
    model = small_model()
    report = prune_analysis(model, sprite_batches(), taus=(0.1,), max_images=5, timing_repeats=1)
    assert report.num_images == 5
    text = report.summary(0.1)
    assert "background counts" not in text and "with_background, headline" in text
    with pytest.raises(ValueError, match=r"tau 0.3 was not evaluated; evaluated taus: \[0.1\]"):
        report.at(0.3)
    assert not math.isnan(report.baseline_fg_ari)


def test_prune_analysis_rejects_slot_attention_and_bad_arguments():
    batches = sprite_batches(num=3)
    with pytest.raises(TypeError, match=r"ARD pruning needs a PSA model .* SlotAttention"):
        prune_analysis(small_model("SA"), batches)
    model = small_model()
    with pytest.raises(ValueError, match=r"tau must be a number >= 0 and < 1"):
        prune_analysis(model, batches, taus=(0.1, 1.0))
    with pytest.raises(ValueError, match="taus must be distinct"):
        prune_analysis(model, batches, taus=(0.1, 0.1))
    with pytest.raises(ValueError, match="at least one threshold"):
        prune_analysis(model, batches, taus=())
    with pytest.raises(ValueError, match="max_images must be an integer >= 1"):
        prune_analysis(model, batches, max_images=0)
    with pytest.raises(ValueError, match=r"needs dict batches with 'image' .* got \['image'\]"):
        prune_analysis(model, [{"image": batches[0]["image"]}])
    with pytest.raises(ValueError, match="loader yielded no images"):
        prune_analysis(model, [])


def test_default_sweep_is_sorted_and_valid():
    assert list(DEFAULT_TAUS) == sorted(DEFAULT_TAUS) and DEFAULT_TAUS[0] == 0.0
    assert all(0 <= t < 1 for t in DEFAULT_TAUS)


# ---------------------------------------------------------------------- ARD inside EM
def _direct_in_em(model, images, tau, seed, **settings):
    """Reference: EM with ARD at τ (and other `with_settings` changes), then decode the
    survivors; `seed` None uses the model's fixed draw of the initial slots (eval mode), an int
    a random draw after `torch.manual_seed(seed)`."""
    parts = with_settings(model.grouping.extensions, prune_tau=tau, **settings)
    args = {"extensions": parts}
    if seed is not None:
        torch.manual_seed(seed)
        args["draw"] = "random"
    with torch.no_grad():
        post = model.encode(images, grouping_args=args)
    keep = post.pi > 0
    out = model.decode(post.slots, keep=None if keep.all() else keep)
    return post, keep, out


def _batch_seed(analysis_seed: int) -> int:
    """The initial-slot seed a seeded analysis draws for its first batch."""
    return int(torch.randint(0, 2**62, (), generator=torch.Generator().manual_seed(analysis_seed)))


def _ard_tau(model) -> float:
    ard = model.grouping.extension(ARDPrune)
    return 0.0 if ard is None else ard.tau


def _merge_dist(model) -> float:
    merge = model.grouping.extension(MomentMerge)
    return 0.0 if merge is None else merge.dist


def test_in_em_mode_matches_a_direct_computation_and_leaves_the_model_as_it_was():
    model = small_model(grouping_kwargs={"prune_tau": 0.3})
    batches = sprite_batches(num=4, batch=4)
    images = batches[0]["image"]
    seed = _batch_seed(5)  # what the analysis draws for this batch
    report = prune_analysis(model, batches, taus=(0.0, 0.3), timing_repeats=1, seed=5)
    assert report.in_em and _ard_tau(model) == 0.3
    post0, _, base = _direct_in_em(model, images, 0.0, seed)
    post, keep, out = _direct_in_em(model, images, 0.3, seed)
    assert (~keep).any(), "τ = 0.3 with 4 slots must drop some slot on these images"
    base_mse = (base.recon.double() - images.double()).square().mean().item()
    mse = (out.recon.double() - images.double()).square().mean().item()
    assert report.baseline_mse == pytest.approx(base_mse, rel=1e-9)
    r = report.at(0.3)
    assert r.mse == pytest.approx(mse, rel=1e-9)
    assert r.mean_kept == pytest.approx(keep.sum(1).double().mean().item())
    assert r.decoder_flops_saved == pytest.approx(1 - keep.sum().item() / (4 * K), abs=0.02)
    # the baseline is plain EM with all K slots decoded, whatever the model's own forward
    # would keep (here: it would drop slot 0 of every image)
    model.em_survivors = lambda post, parts=None: (post.pi > 0).index_fill(
        1, torch.tensor([0]), False
    )
    again = prune_analysis(model, batches, taus=(0.0,), timing_repeats=1, seed=0)
    del model.em_survivors
    assert again.decoder_flops == pytest.approx(report.decoder_flops)
    # the baseline is plain EM (prune_tau = 0): every slot kept, π statistics from it
    r0 = report.at(0.0)
    assert r0.mean_kept == K and r0.mse_change_pct == 0.0 and r0.decoder_flops_saved == 0.0
    sorted_pi = post0.pi.sort(1, descending=True).values.mean(0)
    assert report.pi_sorted_mean == pytest.approx(sorted_pi.tolist(), abs=1e-6)
    assert "inside EM" in report.summary(0.3)


def test_threshold_mode_on_an_em_pruned_model_decodes_only_its_survivors():
    model = small_model(grouping_kwargs={"prune_tau": 0.3})
    batches = sprite_batches(num=4, batch=4)
    images = batches[0]["image"]
    torch.manual_seed(8)
    report = prune_analysis(model, batches, taus=(0.0,), timing_repeats=1, in_em=False)
    assert not report.in_em and "threshold on the final pi" in report.summary(0.0)
    torch.manual_seed(8)
    with torch.no_grad():
        out = model(images)  # the model's own forward skips slots pruned inside EM
    mse = (out.recon.double() - images.double()).square().mean().item()
    assert report.baseline_mse == pytest.approx(mse, rel=1e-9)
    with pytest.raises(TypeError, match="in_em must be True, False or None"):
        prune_analysis(model, batches, in_em="yes")


def test_in_em_mode_with_merging_compares_against_plain_em():
    model = small_model(grouping_kwargs={"merge_dist": 5.0})
    batches = sprite_batches(num=4, batch=4)
    images = batches[0]["image"]
    seed = _batch_seed(6)
    report = prune_analysis(model, batches, taus=(0.0,), timing_repeats=1, seed=6)  # in_em=None
    assert report.in_em and _merge_dist(model) == 5.0
    # the baseline: plain EM, no merging, all K slots decoded
    _, _, base = _direct_in_em(model, images, 0.0, seed, merge_dist=0.0)
    base_mse = (base.recon.double() - images.double()).square().mean().item()
    assert report.baseline_mse == pytest.approx(base_mse, rel=1e-9)
    # τ = 0 with merging: the model's own merged forward, survivors decoded
    post, keep, out = _direct_in_em(model, images, 0.0, seed)
    assert (~keep).any(), "merge_dist = 5 must merge some slots of an untrained model"
    r0 = report.at(0.0)
    assert r0.mean_kept == pytest.approx(keep.sum(1).double().mean().item())
    mse = (out.recon.double() - images.double()).square().mean().item()
    assert r0.mse == pytest.approx(mse, rel=1e-9)


def test_merge_dist_at_inference_overrides_the_model_without_writing_to_it():
    model = small_model()  # trained without merging
    batches = sprite_batches(num=4, batch=4)
    images = batches[0]["image"]
    seed = _batch_seed(7)
    report = prune_analysis(model, batches, taus=(0.0,), timing_repeats=1, merge_dist=5.0, seed=7)
    assert report.in_em and _merge_dist(model) == 0.0  # the module is never written to
    _, keep, _ = _direct_in_em(model, images, 0.0, seed, merge_dist=5.0)
    assert (~keep).any()
    assert report.at(0.0).mean_kept == pytest.approx(keep.sum(1).double().mean().item())
    # and 0 switches off the merging of a model that merges
    merging = small_model(grouping_kwargs={"merge_dist": 5.0})
    off = prune_analysis(
        merging, batches, taus=(0.0,), timing_repeats=1, merge_dist=0.0, in_em=True
    )
    assert off.merge_dist == 0.0 and off.at(0.0).mean_kept == K
    assert _merge_dist(merging) == 5.0
    with pytest.raises(ValueError, match="needs in-EM mode"):
        prune_analysis(model, batches, merge_dist=1.0, in_em=False)
    with pytest.raises(ValueError, match="merge_dist must be a number >= 0"):
        prune_analysis(model, batches, merge_dist=-1.0)


def test_prune_start_at_inference_overrides_the_model_without_writing_to_it():
    model = small_model(grouping_kwargs={"prune_tau": 0.3})  # τ after every iteration (start 1)
    batches = sprite_batches(num=4, batch=4)
    images = batches[0]["image"]
    seed = _batch_seed(9)
    report = prune_analysis(model, batches, taus=(0.3,), timing_repeats=1, prune_start=2, seed=9)
    assert model.grouping.extension(ARDPrune).start == 1  # the module is never written to
    assert report.prune_start == 2 and "tau from EM iteration 2" in report.summary(0.3)
    post_late, late, out = _direct_in_em(model, images, 0.3, seed, prune_start=2)
    post_early, _, _ = _direct_in_em(model, images, 0.3, seed)
    assert not torch.allclose(post_late.pi, post_early.pi), "the start must change the EM here"
    r = report.at(0.3)
    assert r.mean_kept == pytest.approx(late.sum(1).double().mean().item())
    mse = (out.recon.double() - images.double()).square().mean().item()
    assert r.mse == pytest.approx(mse, rel=1e-9)
    with pytest.raises(ValueError, match=r"prune_start must be an integer >= 1 and <= 2; got 3"):
        prune_analysis(model, batches, prune_start=3)
    with pytest.raises(ValueError, match="prune_start applies tau inside EM"):
        prune_analysis(model, batches, prune_start=2, in_em=False)


@pytest.mark.parametrize("in_em", [False, True])
def test_seeded_analysis_does_not_depend_on_the_callers_random_state(in_em):
    model = small_model(grouping_kwargs={"prune_tau": 0.3})
    batches = sprite_batches(num=8, batch=4)
    reports = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        reports.append(
            prune_analysis(model, batches, taus=(0.0, 0.3), timing_repeats=1, in_em=in_em, seed=3)
        )
    a, b = (r.to_dict() for r in reports)
    for r in (a, b):  # wall times differ between runs; everything else must not
        for row in r["results"]:
            row.pop("decoder_seconds"), row.pop("decoder_time_saved")
        r.pop("decoder_seconds")
    assert a == b
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        prune_analysis(model, batches, seed=-1)


def test_unseeded_analysis_uses_the_fixed_draw_and_matches_a_direct_computation():
    model = small_model(grouping_kwargs={"prune_tau": 0.3})
    batches = sprite_batches(num=4, batch=4)
    reports = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        reports.append(prune_analysis(model, batches, taus=(0.3,), timing_repeats=1))
    a, b = reports
    assert a.at(0.3).mse == b.at(0.3).mse and a.baseline_mse == b.baseline_mse
    _, keep, out = _direct_in_em(model, batches[0]["image"], 0.3, None)
    images = batches[0]["image"]
    assert a.at(0.3).mse == pytest.approx(
        (out.recon.double() - images.double()).square().mean().item(), rel=1e-9
    )
    assert a.at(0.3).mean_kept == pytest.approx(keep.sum(1).double().mean().item())
