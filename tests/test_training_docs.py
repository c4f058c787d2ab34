"""docs/training.md's, docs/layers.md's and docs/onnx.md's examples run and print what the
pages show."""
import doctest
from pathlib import Path

import pytest

DOCS_DIR = Path(__file__).resolve().parent.parent / "docs"


NEEDS = {"onnx.md": ("onnx", "onnxruntime", "torch")}
"""What a page's examples import besides flux (the test environments without it skip it)."""


@pytest.mark.parametrize("page", ["training.md", "layers.md", "onnx.md"])
def test_the_page_runs(page):
    for module in NEEDS.get(page, ()):
        pytest.importorskip(module)
    path = DOCS_DIR / page
    text = path.read_text(encoding="utf-8")
    blocks = [block.split("```", 1)[0] for block in text.split("```pycon\n")[1:]]
    assert blocks, f"docs/{page} has no pycon examples"
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    test = parser.get_doctest("\n".join(blocks), {}, f"docs/{page}", str(path), 0)
    runner.run(test)
    assert runner.failures == 0, f"docs/{page}'s examples do not print what it shows"
