"""Feature caches: exact round trip, use in the model, refusal of other encoders, data or versions."""

from __future__ import annotations

import json

import pytest
import torch

from probslot.data import SpritesDataset, collate
from probslot.data.features import CachedFeatures, FeatureCache, check_cache, extract_features
from probslot.models import ModelConfig, build_model

VIT = {
    "weights": "random",
    "patch_size": 4,
    "embed_dim": 12,
    "depth": 2,
    "num_heads": 2,
    "pos_grid": 4,
}
DATA = {"name": "sprites", "split": "train", "num_samples": 10, "seed": 3, "image_size": 16}


def model_for(image_size: int = 16, **encoder):
    cfg = ModelConfig(
        preset=None, encoder="vit", grouping="psa", decoder="feature-mlp", target="features",
        encoder_kwargs={**VIT, **encoder}, decoder_kwargs={"hidden": [16]},
        image_size=image_size, num_slots=3, slot_dim=8, token_mlp=10,
    )  # fmt: skip
    return build_model(cfg)


def sprites(n: int = 10, size: int = 16) -> SpritesDataset:
    return SpritesDataset(num_samples=n, image_size=size, seed=3)


@pytest.fixture
def cache_dir(tmp_path):
    torch.manual_seed(0)
    model = model_for()
    extract_features(
        model, {"train": (sprites(), DATA)}, tmp_path / "cache", batch_size=3, chunk_size=4
    )
    return model, tmp_path / "cache"


def test_cache_round_trips_the_encoders_tokens_exactly(cache_dir):
    model, root = cache_dir
    cache = FeatureCache(root)
    data = sprites()
    images = collate([data[i] for i in range(10)])["image"]
    with torch.no_grad():
        tokens = model.encoder(model.to_internal(images)).tokens.to(torch.float16)
    for i in range(10):
        got = cache.tokens("train", i)
        assert got.dtype == torch.float16 and got.shape == (16, 12)
        assert torch.equal(got, tokens[i]), f"item {i} differs"
    entry = cache.manifest["splits"]["train"]
    assert [c["count"] for c in entry["chunks"]] == [4, 4, 2] and entry["shape"] == [10, 16, 12]
    assert cache.spec == model.feature_spec() and cache.manifest["dtype"] == "float16"
    cache.verify()


def test_training_from_the_cache_equals_running_the_encoder(cache_dir):
    model, root = cache_dir
    data = CachedFeatures(sprites(), root, "train", DATA)
    batch = collate([data[i] for i in range(4)])
    assert batch["features"].shape == (4, 16, 12) and set(batch) >= {"image", "mask", "features"}
    torch.manual_seed(1)
    cached = model(batch["image"], features=batch["features"])
    torch.manual_seed(1)
    direct = model(batch["image"])
    torch.testing.assert_close(cached.target, direct.target, atol=2e-3, rtol=2e-3)  # float16 tokens
    torch.testing.assert_close(cached.recon, direct.recon, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize(
    ("encoder", "size", "differ"),
    [
        ({"layer": 1}, 16, "layer"),
        ({"norm": True}, 16, "norm"),
        ({}, 20, "grid, image_size"),
        ({"embed_dim": 8}, 16, "arch, dim, weights_sha256"),
    ],
)
def test_cache_rejects_another_encoder_layer_or_size(cache_dir, encoder, size, differ):
    _, root = cache_dir
    torch.manual_seed(0)  # the fixture's random weights
    other = model_for(size, **encoder)
    with pytest.raises(ValueError, match=rf"holds tokens of vit, block 2, 16×16 images, .* \(they "
                       rf"differ in {differ}\); extract the features again"):  # fmt: skip
        check_cache(FeatureCache(root), other.feature_spec())


def test_cache_rejects_other_weights(cache_dir):
    _, root = cache_dir
    torch.manual_seed(5)  # the same architecture, other random weights
    with pytest.raises(ValueError, match=r"differ in weights_sha256\)"):
        check_cache(FeatureCache(root), model_for().feature_spec())


def test_cache_rejects_other_data_and_other_counts(cache_dir):
    _, root = cache_dir
    with pytest.raises(ValueError, match=r"extracted from other train data: seed=3 \(cache\) vs 4"):
        CachedFeatures(sprites(), root, "train", {**DATA, "seed": 4})
    with pytest.raises(ValueError, match=r"holds 10 train items but the dataset has 9"):
        CachedFeatures(sprites(9), root, "train", DATA)
    with pytest.raises(ValueError, match=r"holds the splits train but not 'val'; extract it with"):
        CachedFeatures(sprites(), root, "val", DATA)


def test_extracting_into_a_cache_of_another_encoder_is_refused(cache_dir):
    _, root = cache_dir
    with pytest.raises(ValueError, match=r"differ in layer"):
        extract_features(model_for(layer=1), {"val": (sprites(2), DATA)}, root)


def test_adding_a_split_keeps_the_others(cache_dir):
    model, root = cache_dir
    extract_features(model, {"val": (sprites(3), {**DATA, "split": "val"})}, root, chunk_size=4)
    assert FeatureCache(root).splits == ["train", "val"]


def test_missing_newer_and_corrupt_caches(cache_dir, tmp_path):
    _, root = cache_dir
    with pytest.raises(
        FileNotFoundError, match=r"no feature cache at .*`probslot features extract"
    ):
        FeatureCache(tmp_path / "nowhere")
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(ValueError, match=r"written by a newer probslot \(cache version 99 > 1\)"):
        FeatureCache(root)
    (root / "manifest.json").write_text(json.dumps(manifest))
    chunk = root / "train" / "00001.npy"
    raw = bytearray(chunk.read_bytes())
    raw[-1] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"00001\.npy: sha256 .* does not match the manifest"):
        FeatureCache(root).verify()


def test_augmented_datasets_are_not_cached(tmp_path):
    class Augmented(torch.utils.data.Dataset):
        deterministic = False

        def __len__(self):
            return 1

        def __getitem__(self, i):
            return {"image": torch.rand(3, 16, 16)}

    with pytest.raises(ValueError, match=r"draws random augmentations"):
        extract_features(model_for(), {"train": (Augmented(), DATA)}, tmp_path / "c")
