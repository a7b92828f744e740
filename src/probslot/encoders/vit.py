"""Frozen self-supervised Vision Transformers (DINO, DINOv2) that read the published checkpoints.

DINOSAUR (Seitzer et al. 2023) and the paper's real-image results (Table 3) group the patch
tokens of a frozen DINO ViT. timm needs torchvision, which probslot does not depend on, so this
module holds a small ViT of its own whose parameter names *are* the published state-dict keys:

========================  ==============================================================
key                       shape (D = embed_dim, p = patch, M² = positions of the checkpoint)
========================  ==============================================================
cls_token                 (1, 1, D)
pos_embed                 (1, 1 + M², D)    DINO: M = 14 (224/16); DINOv2: M = 37 (518/14)
register_tokens           (1, R, D)         DINOv2 "_reg4" checkpoints only (R = 4)
mask_token                (1, D)            DINOv2 only; unused at inference, dropped on load
patch_embed.proj.weight   (D, 3, p, p)      and .bias (D,)
blocks.N.norm1            LayerNorm(D)      .weight, .bias
blocks.N.attn.qkv         Linear(D, 3D)     .weight, .bias
blocks.N.attn.proj        Linear(D, D)
blocks.N.ls1.gamma        (D,)              DINOv2 only (LayerScale), also ls2.gamma
blocks.N.norm2            LayerNorm(D)
blocks.N.mlp.fc1          Linear(D, 4D)
blocks.N.mlp.fc2          Linear(4D, D)
norm                      LayerNorm(D)      the final norm (applied only with ``norm=True``)
========================  ==============================================================

Checkpoints are read from a user-supplied file; nothing is downloaded. `load_published` accepts
the plain backbone state dicts the authors publish, and also DINO's full training checkpoints
(``teacher`` / ``student`` entries with ``module.`` and ``backbone.`` prefixes; heads dropped).

The encoder contract (`docs/architecture.md`): ``forward(images (b, 3, H, W) in [−1, 1])`` →
``EncoderOutput(tokens (b, h·w, D), grid (h, w))``. The images are mapped to [0, 1] and
normalised with the ImageNet mean and std inside, optionally resized to ``input_size``; the
position embedding is interpolated to the token grid as the authors' code does (bicubic; DINO and
DINOv2 with the historical +0.1 offset, the register models with anti-aliasing instead).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probslot.layers import as_hw
from probslot.typing import EncoderOutput
from probslot.validation import check_bool, check_float, check_int, check_positive_int

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VIT_ARCHS",
    "ViTArch",
    "ViTEncoder",
    "VisionTransformer",
    "find_weights",
    "load_published",
    "published_shapes",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: where `find_weights` looks for a published checkpoint when no path is given
WEIGHTS_ENV = "PROBSLOT_WEIGHTS"
DEFAULT_WEIGHTS_DIR = Path("~/.cache/probslot/weights")


@dataclass(frozen=True)
class ViTArch:
    """The architecture of a ViT checkpoint and where it is published.

    Attributes:
        name: registry name (``dino-vits16``, ...), or ``vit`` for a custom architecture.
        label: human name used in messages (``DINO ViT-S/16``).
        patch_size, embed_dim, depth, num_heads, mlp_ratio: the transformer.
        layerscale: blocks carry LayerScale ``ls1.gamma`` / ``ls2.gamma`` (DINOv2).
        num_registers: register tokens (DINOv2 ``_reg4`` checkpoints: 4); dropped from the output.
        pos_grid: side M of the checkpoint's position-embedding grid (1 + M² positions).
        interpolate_offset: DINO's +0.1 kludge when resizing the position grid (0 = exact size).
        antialias: anti-aliased bicubic resizing of the position grid (DINOv2 register models).
        mask_token: the checkpoint holds DINOv2's ``mask_token`` (unused, dropped on load).
        file: the published file name (None for a custom architecture).
        url: where that file is published.
    """

    name: str
    label: str
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    layerscale: bool = False
    num_registers: int = 0
    pos_grid: int = 14
    interpolate_offset: float = 0.1
    antialias: bool = False
    mask_token: bool = False
    file: str | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        for key in ("patch_size", "embed_dim", "depth", "num_heads", "pos_grid"):
            check_positive_int(key, getattr(self, key))
        check_int("num_registers", self.num_registers, low=0)
        check_float("mlp_ratio", self.mlp_ratio, low=0.0, low_open=True)
        check_float("interpolate_offset", self.interpolate_offset, low=0.0)
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})"
            )

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    def published(self) -> str:
        """``'dino_deitsmall16_pretrain.pth' (published at URL)`` for messages."""
        if self.file is None:
            return "a state dict in the DINO/DINOv2 key layout"
        return f"{self.file!r} (published at {self.url})"


_DINO = "https://dl.fbaipublicfiles.com/dino"
_DINOV2 = "https://dl.fbaipublicfiles.com/dinov2"
_V2 = {"layerscale": True, "pos_grid": 37, "mask_token": True, "patch_size": 14}
_REG = {"num_registers": 4, "interpolate_offset": 0.0, "antialias": True}
_ARCHS = (
    ViTArch("dino-vits16", "DINO ViT-S/16", 16, 384, 12, 6,
            file="dino_deitsmall16_pretrain.pth",
            url=f"{_DINO}/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth"),
    ViTArch("dino-vitb16", "DINO ViT-B/16", 16, 768, 12, 12,
            file="dino_vitbase16_pretrain.pth",
            url=f"{_DINO}/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth"),
    ViTArch("dinov2-vits14", "DINOv2 ViT-S/14", embed_dim=384, depth=12, num_heads=6, **_V2,
            file="dinov2_vits14_pretrain.pth",
            url=f"{_DINOV2}/dinov2_vits14/dinov2_vits14_pretrain.pth"),
    ViTArch("dinov2-vitb14", "DINOv2 ViT-B/14", embed_dim=768, depth=12, num_heads=12, **_V2,
            file="dinov2_vitb14_pretrain.pth",
            url=f"{_DINOV2}/dinov2_vitb14/dinov2_vitb14_pretrain.pth"),
    ViTArch("dinov2-vits14-reg", "DINOv2 ViT-S/14 with registers", embed_dim=384, depth=12,
            num_heads=6, **_V2, **_REG, file="dinov2_vits14_reg4_pretrain.pth",
            url=f"{_DINOV2}/dinov2_vits14/dinov2_vits14_reg4_pretrain.pth"),
    ViTArch("dinov2-vitb14-reg", "DINOv2 ViT-B/14 with registers", embed_dim=768, depth=12,
            num_heads=12, **_V2, **_REG, file="dinov2_vitb14_reg4_pretrain.pth",
            url=f"{_DINOV2}/dinov2_vitb14/dinov2_vitb14_reg4_pretrain.pth"),
)  # fmt: skip
#: registry name → architecture of the published checkpoints
VIT_ARCHS: dict[str, ViTArch] = {a.name: a for a in _ARCHS}


# --------------------------------------------------------------------------- the transformer
class Attention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` projection (published key names)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (b, heads, n, d / heads)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q kᵀ / √(d/heads)) v
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float = 1.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm block: x + ls1(attn(norm1 x)), then x + ls2(mlp(norm2 x)) (LayerScale: DINOv2)."""

    def __init__(self, arch: ViTArch) -> None:
        super().__init__()
        d = arch.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = Attention(d, arch.num_heads)
        self.ls1: nn.Module = LayerScale(d) if arch.layerscale else nn.Identity()
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = Mlp(d, arch.mlp_hidden)
        self.ls2: nn.Module = LayerScale(d) if arch.layerscale else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)  # (b, D, h, w)


class VisionTransformer(nn.Module):
    """The DINO / DINOv2 backbone; parameter names are the published state-dict keys.

    ``forward(x (b, 3, H, W) normalised, layer, norm)`` → patch tokens (b, h·w, D) after block
    ``layer`` (1-based; later blocks are not run), row-major over the (h, w) = (H/p, W/p) grid,
    the class and register tokens dropped; ``norm=True`` applies the final LayerNorm.
    """

    def __init__(self, arch: ViTArch) -> None:
        super().__init__()
        self.arch = arch
        d = arch.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + arch.pos_grid**2, d))
        if arch.num_registers:
            self.register_tokens = nn.Parameter(torch.zeros(1, arch.num_registers, d))
        else:
            self.register_parameter("register_tokens", None)
        self.patch_embed = PatchEmbed(arch.patch_size, d)
        self.blocks = nn.ModuleList(Block(arch) for _ in range(arch.depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The authors' initialisation of every parameter (so a module built on the meta device
        can be materialised with it): N(0, 0.02²) for linear layers and positions. Their
        ``trunc_normal_(std=0.02)`` truncates at ±2 (absolute, i.e. 100 σ), which is this normal
        in all but name, at a third of the cost."""
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.LayerNorm, nn.Conv2d)):
                module.reset_parameters()
            elif isinstance(module, LayerScale):
                module.gamma.fill_(1.0)  # DINOv2's init_values

    def position_embedding(self, h: int, w: int) -> Tensor:
        """(1, 1 + h·w, D) class + patch positions for an (h, w) token grid (bicubic resize)."""
        m, arch = self.arch.pos_grid, self.arch
        if (h, w) == (m, m):
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        d = patch_pos.shape[-1]
        grid = patch_pos.float().reshape(1, m, m, d).permute(0, 3, 1, 2)  # (1, D, M, M)
        if arch.interpolate_offset:
            # the authors' kludge (facebookresearch/dino#8): the scale, not the size, sets the
            # sampling positions, so it is kept for checkpoints trained with it
            scale = ((h + arch.interpolate_offset) / m, (w + arch.interpolate_offset) / m)
            grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=arch.antialias)
        else:
            grid = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=arch.antialias)
        assert tuple(grid.shape[-2:]) == (h, w), f"position grid {tuple(grid.shape)} != {(h, w)}"
        patch_pos = grid.permute(0, 2, 3, 1).reshape(1, h * w, d).to(self.pos_embed.dtype)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def forward(self, x: Tensor, layer: int | None = None, norm: bool = False) -> Tensor:
        b = x.shape[0]
        patches = self.patch_embed(x)  # (b, D, h, w)
        h, w = patches.shape[-2:]
        tokens = patches.flatten(2).transpose(1, 2)  # (b, h·w, D), row-major
        x = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)
        x = x + self.position_embedding(h, w)  # (b, 1 + h·w, D)
        if self.register_tokens is not None:  # after the positions, as DINOv2
            x = torch.cat([x[:, :1], self.register_tokens.expand(b, -1, -1), x[:, 1:]], dim=1)
        for block in self.blocks[: self.arch.depth if layer is None else layer]:
            x = block(x)
        if norm:
            x = self.norm(x)
        return x[:, 1 + self.arch.num_registers :]  # (b, h·w, D)


# --------------------------------------------------------------------------- published weights
def published_shapes(arch: ViTArch) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of a checkpoint of `arch` in the published layout (after unwrapping),
    ``mask_token`` included for DINOv2."""
    d, p, hid = arch.embed_dim, arch.patch_size, arch.mlp_hidden
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, d),
        "pos_embed": (1, 1 + arch.pos_grid**2, d),
    }
    if arch.num_registers:
        shapes["register_tokens"] = (1, arch.num_registers, d)
    if arch.mask_token:
        shapes["mask_token"] = (1, d)
    shapes |= {"patch_embed.proj.weight": (d, 3, p, p), "patch_embed.proj.bias": (d,)}
    for i in range(arch.depth):
        linear = {
            "attn.qkv": (3 * d, d),
            "attn.proj": (d, d),
            "mlp.fc1": (hid, d),
            "mlp.fc2": (d, hid),
        }
        for name in ("norm1", "norm2"):
            shapes |= {f"blocks.{i}.{name}.weight": (d,), f"blocks.{i}.{name}.bias": (d,)}
        for name, shape in linear.items():
            shapes |= {f"blocks.{i}.{name}.weight": shape, f"blocks.{i}.{name}.bias": (shape[0],)}
        if arch.layerscale:
            shapes |= {f"blocks.{i}.ls1.gamma": (d,), f"blocks.{i}.ls2.gamma": (d,)}
    return shapes | {"norm.weight": (d,), "norm.bias": (d,)}


_WRAPPERS = ("teacher", "student", "state_dict", "model")  # DINO full checkpoints, others
_PREFIXES = ("module.", "backbone.")


def _unwrap(obj: Any) -> dict[str, Tensor]:
    """The backbone state dict inside a loaded checkpoint, prefixes stripped, heads dropped."""
    while isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
        key = next((k for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            break
        obj = obj[key]
    if not isinstance(obj, Mapping):
        return {}
    out: dict[str, Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, Tensor):
            continue
        for prefix in _PREFIXES:
            key = key.removeprefix(prefix)
        if not key.startswith("head."):
            out[key] = value
    return out


def _short(names: Sequence[str], limit: int = 3) -> str:
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def load_published(path: str | os.PathLike[str], arch: ViTArch) -> tuple[dict[str, Tensor], str]:
    """(state dict for `VisionTransformer(arch)`, sha256 of the file) from a published checkpoint.

    Reads ``.pth`` (``torch.load(weights_only=True)``) or ``.safetensors`` files. The keys must be
    exactly the published layout of `arch` (`published_shapes`); ``mask_token`` is dropped.

    Raises:
        FileNotFoundError: `path` does not exist (names the expected file and where it is published).
        ValueError: the file is not a checkpoint, or its keys or shapes differ from the layout.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"{arch.label} weights file {str(file)!r} does not exist; expected "
            f"{arch.published()}. Download it and pass encoder_kwargs.weights=PATH"
        )
    data = file.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load as load_safetensors

            loaded: Any = load_safetensors(data)
        else:
            loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-line message
        raise ValueError(
            f"{str(file)!r} is not a readable PyTorch checkpoint ({type(err).__name__}: "
            f"{' '.join(str(err).split())[:120]}); expected {arch.published()}"
        ) from None
    state = _unwrap(loaded)
    expected = published_shapes(arch)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {expected[k]})"
        for k in expected
        if k in state and tuple(state[k].shape) != expected[k]
    ]
    if missing or unexpected or wrong:
        problems = [
            f"missing {_short(missing)}" if missing else "",
            f"unexpected {_short(unexpected)}" if unexpected else "",
            f"wrong shape {_short(wrong)}" if wrong else "",
        ]
        raise ValueError(
            f"{str(file)!r} does not hold {arch.label} weights in the published layout: "
            f"{'; '.join(p for p in problems if p)}. Expected {arch.published()}"
        )
    state.pop("mask_token", None)
    return {k: v.float() for k, v in state.items()}, digest


def find_weights(arch: ViTArch) -> Path:
    """The published file of `arch` in ``$PROBSLOT_WEIGHTS`` (a directory, or several joined by
    ``os.pathsep``) or ``~/.cache/probslot/weights``; FileNotFoundError naming file and URL."""
    if arch.file is None:
        raise ValueError(
            f"encoder {arch.name!r} has no published checkpoint; pass encoder_kwargs.weights=PATH "
            "(a state dict in the DINO/DINOv2 key layout) or weights: random"
        )
    dirs = [Path(p) for p in os.environ.get(WEIGHTS_ENV, "").split(os.pathsep) if p]
    dirs.append(DEFAULT_WEIGHTS_DIR)
    for folder in dirs:
        candidate = folder.expanduser() / arch.file
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(d) for d in dirs)
    raise FileNotFoundError(
        f"{arch.label} weights not found: expected {arch.published()} in {looked}. Download it "
        f"there, or pass encoder_kwargs.weights=PATH (nothing is downloaded automatically)"
    )


# --------------------------------------------------------------------------- the encoder
class ViTEncoder(nn.Module):
    """A (frozen) DINO / DINOv2 ViT as a probslot encoder: images → patch tokens of one block.

    Args:
        arch: the architecture (`VIT_ARCHS` for the published ones).
        weights: path of the checkpoint; None looks for the published file name in
            ``$PROBSLOT_WEIGHTS`` and ``~/.cache/probslot/weights``; ``"random"`` keeps the
            random initialisation (tests, benchmarks).
        layer: the block whose output tokens are returned, 1-based (default: the last, as
            DINOSAUR); later blocks are not run.
        norm: apply the final LayerNorm to those tokens (DINOSAUR: no).
        freeze: no gradients and eval mode for the backbone (default; a frozen target is what
            feature reconstruction needs).
        input_size: resize images to this (H, W) inside the encoder (bilinear, anti-aliased);
            None takes them at their size. Either way both sides must be multiples of the patch.

    forward(images (b, 3, H, W) in [−1, 1]) → EncoderOutput(tokens (b, h·w, D), grid (h, w)),
    D = ``out_dim`` = embed_dim. ``spec(image_size)`` names what the tokens depend on (for caches).
    """

    def __init__(
        self,
        arch: ViTArch,
        weights: str | None = None,
        layer: int | None = None,
        norm: bool = False,
        freeze: bool = True,
        input_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(arch, ViTArch):
            raise TypeError(f"arch must be a ViTArch; got {type(arch).__name__}")
        self.arch = arch
        self.layer = arch.depth if layer is None else check_int(
            "layer", layer, low=1, high=arch.depth, hint=f"{arch.label} has {arch.depth} blocks"
        )  # fmt: skip
        self.norm = check_bool("norm", norm)
        self.freeze = check_bool("freeze", freeze)
        self.out_dim = arch.embed_dim
        self.patch_size = arch.patch_size
        self.input_size = None if input_size is None else as_hw(input_size, "input_size")
        if self.input_size is not None:
            self._check_divisible(self.input_size, "input_size")
        if weights is not None and not isinstance(weights, str | os.PathLike):
            raise TypeError(f"weights must be a file path, 'random' or None; got {weights!r}")
        self.weights = None if weights is None else str(weights)
        self._weights_sha256: str | None = None
        with torch.device("meta"):  # no default initialisation of weights about to be replaced
            self.backbone = VisionTransformer(arch)
        self.backbone.to_empty(device="cpu")
        if self.weights == "random":
            self.backbone.reset_parameters()
        else:
            path = find_weights(arch) if self.weights is None else Path(self.weights)
            state, self._weights_sha256 = load_published(path, arch)
            self.backbone.load_state_dict(state, strict=True)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        if self.freeze:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> ViTEncoder:
        super().train(mode)
        if self.freeze:
            self.backbone.eval()  # a frozen backbone stays in inference mode
        return self

    def _check_divisible(self, size: tuple[int, int], what: str) -> None:
        p = self.patch_size
        if size[0] % p or size[1] % p:
            near = sorted({max(p, s // p * p) for s in size} | {(s // p + 1) * p for s in size})
            raise ValueError(
                f"{what} {size} is not divisible by the patch size {p} of {self.arch.label}; use "
                f"multiples of {p} (e.g. {', '.join(map(str, near))}), or set "
                "encoder_kwargs.input_size to a multiple to resize inside the encoder"
            )

    def grid_size(self, image_size: int | Sequence[int]) -> tuple[int, int]:
        """(h, w) token grid for images of `image_size`: (input size) / patch size."""
        size = self.input_size or as_hw(image_size, "image_size")
        self._check_divisible(size, "image size" if self.input_size is None else "input_size")
        return size[0] // self.patch_size, size[1] // self.patch_size

    @property
    def weights_sha256(self) -> str:
        """sha256 of the weights file, or of the parameters for random weights."""
        if self._weights_sha256 is None:
            digest = hashlib.sha256()
            for name, tensor in sorted(self.backbone.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
            return "params:" + digest.hexdigest()
        return self._weights_sha256

    def spec(self, image_size: int | Sequence[int]) -> dict[str, Any]:
        """What the tokens depend on: architecture, weights, layer, norm and sizes (JSON-safe)."""
        hw = as_hw(image_size, "image_size")
        arch = asdict(replace(self.arch, file=None, url=None))
        return {
            "encoder": self.arch.name,
            "arch": arch,
            "weights_sha256": self.weights_sha256,
            "layer": self.layer,
            "norm": self.norm,
            "image_size": list(hw),
            "input_size": None if self.input_size is None else list(self.input_size),
            "grid": list(self.grid_size(hw)),
            "dim": self.out_dim,
        }

    def normalise(self, images: Tensor) -> Tensor:
        """[−1, 1] images → ImageNet-normalised, resized to ``input_size`` when set."""
        x = (images + 1.0) * 0.5  # [0, 1]
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", antialias=True)
        return (x - self.mean) / self.std

    def forward(self, images: Tensor) -> EncoderOutput:
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must be (batch, 3, height, width); got {got}")
        x = self.normalise(images)
        h, w = self.grid_size(tuple(x.shape[-2:]))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            tokens = self.backbone(x, layer=self.layer, norm=self.norm)  # (b, h·w, D)
        return EncoderOutput(tokens=tokens, grid=(h, w))

    def extra_repr(self) -> str:
        weights = self.weights or f"auto ({self.arch.file})"
        return f"{self.arch.name}, weights={weights}, layer={self.layer}, norm={self.norm}, freeze={self.freeze}"


def _named_factory(arch: ViTArch):
    def build(
        weights: str | None = None,
        layer: int | None = None,
        norm: bool = False,
        freeze: bool = True,
        input_size: int | list[int] | None = None,
    ) -> ViTEncoder:
        return ViTEncoder(arch, weights, layer, norm, freeze, input_size)

    build.__name__ = f"build_{arch.name.replace('-', '_')}"
    build.__doc__ = (
        f"{arch.label} ({arch.embed_dim}-d tokens, patch {arch.patch_size}), weights "
        f"{arch.published()}; see `ViTEncoder` for the options."
    )
    return build


def build_vit(
    weights: str | None = None,
    patch_size: int = 16,
    embed_dim: int = 384,
    depth: int = 12,
    num_heads: int = 6,
    mlp_ratio: float = 4.0,
    layerscale: bool = False,
    num_registers: int = 0,
    pos_grid: int = 14,
    interpolate_offset: float = 0.1,
    antialias: bool = False,
    mask_token: bool = False,
    layer: int | None = None,
    norm: bool = False,
    freeze: bool = True,
    input_size: int | list[int] | None = None,
) -> ViTEncoder:
    """A ViT of any size in the DINO (``layerscale=False``) or DINOv2 (``layerscale=True,
    mask_token=True``) key layout, e.g. a tiny one for tests; ``weights`` is required (a path or
    ``"random"``)."""
    arch = ViTArch(
        "vit", "custom ViT", patch_size, embed_dim, depth, num_heads, mlp_ratio, layerscale,
        num_registers, pos_grid, interpolate_offset, antialias, mask_token,
    )  # fmt: skip
    if weights is None:
        find_weights(arch)  # raises: a custom architecture has no published file
    return ViTEncoder(arch, weights, layer, norm, freeze, input_size)


def named_factories() -> dict[str, Any]:
    """Registry name → factory for every published architecture (and ``vit`` for any size)."""
    return {"vit": build_vit, **{name: _named_factory(a) for name, a in VIT_ARCHS.items()}}
