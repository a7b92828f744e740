"""The README's grouping-module example runs as written and its shape comments hold."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_grouping_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - our own README
    post, out = namespace["post"], namespace["out"]
    assert tuple(post.mu.shape) == (8, 5, 64)
    assert tuple(post.attn.shape) == (8, 5, 256)
    assert tuple(out.slots.shape) == (8, 7, 64)
    assert tuple(namespace["keep"].shape) == (8, 5)
