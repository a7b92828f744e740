"""FID / KID maths with a small self-contained feature extractor; weights-file errors."""

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from probslot.metrics import (
    FeatureExtractor,
    InceptionFeatures,
    extract_features,
    fid_metric,
    frechet_distance,
    gaussian_frechet_distance,
    kernel_inception_distance,
    kid_metric,
)


class RandomConvFeatures(nn.Module):
    """A fixed random conv net: images (b, 3, H, W) in [0, 1] → (b, 6) features."""

    num_features = 6

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(11)
        self.conv = nn.Conv2d(3, 6, 3, stride=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen))
            self.conv.bias.zero_()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(images.float())).mean((2, 3))


def _scipy_frechet(mu1, c1, mu2, c2):
    covmean = scipy.linalg.sqrtm(c1 @ c2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.trace(covmean))


def test_gaussian_frechet_matches_scipy():
    gen = np.random.default_rng(5)
    a, b = gen.normal(size=(4, 4)), gen.normal(size=(4, 4))
    c1, c2 = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.2 * np.eye(4)
    mu1, mu2 = gen.normal(size=4), gen.normal(size=4)
    got = gaussian_frechet_distance(*(torch.from_numpy(x) for x in (mu1, c1, mu2, c2)))
    assert got == pytest.approx(_scipy_frechet(mu1, c1, mu2, c2), rel=1e-8)


def test_fid_of_samples_approaches_closed_form():
    gen = torch.Generator().manual_seed(2)
    d = 3
    mu2 = torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64)
    scale = torch.tensor([[1.0, 0.0, 0.0], [0.5, 1.5, 0.0], [0.0, 0.3, 0.7]], dtype=torch.float64)
    x = torch.randn(60_000, d, generator=gen, dtype=torch.float64)
    y = torch.randn(60_000, d, generator=gen, dtype=torch.float64) @ scale.T + mu2
    closed = gaussian_frechet_distance(torch.zeros(d), torch.eye(d), mu2, scale @ scale.T)
    assert frechet_distance(x, y) == pytest.approx(closed, rel=0.03)


def test_fid_kid_identical_zero_shifted_positive():
    extractor = RandomConvFeatures()
    assert isinstance(extractor, FeatureExtractor)
    images = torch.rand(64, 3, 9, 13)
    feats = extract_features(extractor, images, batch_size=17)
    assert feats.shape == (64, 6)
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-9)
    shifted = extract_features(extractor, (images + 0.3).clamp(0, 1))
    assert frechet_distance(feats, shifted) > 1e-3
    same = kernel_inception_distance(feats, feats, subsets=5, subset_size=50)
    other = kernel_inception_distance(feats, shifted, subsets=5, subset_size=50)
    assert abs(same.mean) < 1e-2 * other.mean
    assert other.mean > 0 and other.subset_size == 50


def test_kid_unbiased_estimator_matches_reference():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(20, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(20, 5, generator=gen, dtype=torch.float64) + 0.5
    got = kernel_inception_distance(x, y, subsets=1, subset_size=20).mean

    def k(u, v):
        return (u @ v.T / 5 + 1) ** 3

    m = 20
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    ref = (kxx.sum() - kxx.trace()) / (m * (m - 1)) + (kyy.sum() - kyy.trace()) / (m * (m - 1))
    ref -= 2 * kxy.mean()
    assert got == pytest.approx(ref.item(), rel=1e-10)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance`:UserWarning")
def test_torchmetrics_wrappers_agree_with_pure_functions():
    extractor = RandomConvFeatures()
    real, fake = torch.rand(40, 3, 9, 13), (torch.rand(40, 3, 9, 13) * 0.8)
    fid = fid_metric(extractor)
    fid.update(real[:25], real=True)
    fid.update(real[25:], real=True)
    fid.update(fake, real=False)
    expected = frechet_distance(extractor(real), extractor(fake))
    assert fid.compute().item() == pytest.approx(expected, rel=1e-3, abs=1e-5)
    kid = kid_metric(extractor, subsets=3, subset_size=20)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    mean, _ = kid.compute()
    assert torch.isfinite(mean)


def test_inception_from_file_errors(tmp_path):
    missing = tmp_path / "inception-2015-12-05.pt"
    with pytest.raises(FileNotFoundError, match="never downloads.*InceptionFeatures.from_file"):
        InceptionFeatures.from_file(missing)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torchscript archive")
    with pytest.raises(ValueError, match="not a TorchScript archive"):
        InceptionFeatures.from_file(junk)


def test_inception_from_torchscript_file(tmp_path):
    class Net(nn.Module):
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            return x.float().mean((2, 3)) if return_features else x.float()

    path = tmp_path / "net.pt"
    with warnings.catch_warnings():  # TorchScript is deprecated in recent torch
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(Net()).save(str(path))
    feats = InceptionFeatures.from_file(path, num_features=3)
    images = torch.rand(2, 3, 5, 7)
    out = feats(images)
    torch.testing.assert_close(out, (images * 255).round().mean((2, 3)))
    with pytest.raises(ValueError, match=r"\(b, 3, H, W\)"):
        feats(torch.rand(2, 5, 7))


def test_feature_set_errors():
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance(torch.randn(5, 3), torch.randn(5, 4))
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(torch.randn(1, 3), torch.randn(5, 3))
