"""docs/training.md's examples run and print what the page shows."""
import doctest
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "training.md"


def test_the_training_page_runs():
    text = DOCS.read_text(encoding="utf-8")
    blocks = [block.split("```", 1)[0] for block in text.split("```pycon\n")[1:]]
    assert blocks, "docs/training.md has no pycon examples"
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    test = parser.get_doctest("\n".join(blocks), {}, "docs/training.md", str(DOCS), 0)
    runner.run(test)
    assert runner.failures == 0, "docs/training.md's examples do not print what it shows"
