"""The grouping-module examples of docs/algorithm.md run as written and their shape comments hold."""

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "algorithm.md"


def test_the_grouping_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert blocks, "docs/algorithm.md has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "docs/algorithm.md", "exec"), namespace)  # noqa: S102 - our own docs
    post, out = namespace["post"], namespace["out"]
    assert tuple(post.mu.shape) == (8, 5, 64)
    assert tuple(post.attn.shape) == (8, 5, 256)
    assert tuple(out.slots.shape) == (8, 7, 64)
    assert tuple(namespace["keep"].shape) == (8, 5)


def test_the_parts_example_runs() -> None:
    """The second example (PSA with parts) runs after the first and builds what it says."""
    from probslot.nn import ARDPrune, Standardize, TemperedEStep

    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    namespace: dict = {}
    exec(compile(blocks[0], "docs/algorithm.md", "exec"), namespace)  # noqa: S102 - our own docs
    exec(compile(blocks[1], "docs/algorithm.md", "exec"), namespace)  # noqa: S102
    psa, post, post_t = namespace["psa"], namespace["post"], namespace["post_t"]
    assert [type(p) for p in psa.extensions] == [Standardize, TemperedEStep, ARDPrune]
    assert tuple(post.mu.shape) == (8, 5, 64) and tuple(post_t.pi.shape) == (8, 5)
    assert "ARDPrune(tau=0.05, start=3)" in repr(psa)
