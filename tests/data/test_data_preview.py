"""preview(): a labelled PNG grid."""

from __future__ import annotations

from pathlib import Path

import pytest

from probslot.data.preview import preview

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("sprites", {"image_size": 24, "max_objects": 3}), ("toy2d", {"points_per_item": 20})],
)
def test_preview_writes_png(tmp_path: Path, name: str, kwargs: dict) -> None:
    out = preview(name, tmp_path / "nested" / "grid.png", num=5, seed=1, **kwargs)
    assert out == tmp_path / "nested" / "grid.png"
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in out.parent.iterdir()] == ["grid.png"]  # atomic: no temp file left


def test_preview_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Did you mean 'toy2d'"):
        preview("toy2", tmp_path / "g.png")
    with pytest.raises(ValueError, match=r"num must be an integer >= 1 and <= 256; got 0"):
        preview("sprites", tmp_path / "g.png", num=0)
    with pytest.raises(TypeError, match=r"num must be an integer >= 1 and <= 256; got 2\.5"):
        preview("sprites", tmp_path / "g.png", num=2.5)
    with pytest.raises(ValueError, match=r"\.png"):
        preview("sprites", tmp_path / "g.jpg")
    with pytest.raises(ValueError, match=r"unknown shape 'sqare'\. Did you mean 'square'"):
        preview("sprites", tmp_path / "g.png", shapes=("sqare",))
