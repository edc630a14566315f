"""Every relative link of README.md leads somewhere: the README is not part of the MkDocs site (it sits outside
docs/), so `mkdocs build --strict` does not check it. A link to a file must name a file or folder of the
repository; one with an anchor (#...) into a Markdown file, or into the README itself, must name one of that
file's headings, as GitHub makes their anchors."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)


def _prose(text: str) -> str:
    """The Markdown outside fenced code blocks (a `# comment` in a bash block is no heading, a [x](y) no link)."""
    return FENCE.sub("", text)


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, each space a hyphen."""
    text = re.sub(r"<[^>]*>", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", _prose(path.read_text()), re.M)}


def _links() -> list[str]:
    return [u for u in LINK.findall(_prose(README.read_text())) if not re.match(r"[a-z][a-z0-9+.-]*:", u)]


def test_the_readme_has_relative_links():
    assert len(_links()) >= 10  # the parser finds them (a broken regex would pass everything below)


@pytest.mark.parametrize("url", sorted(set(_links())))
def test_each_relative_link_of_the_readme_resolves(url):
    path, _, anchor = url.partition("#")
    target = (README.parent / path).resolve() if path else README
    assert target.exists(), f"README.md links to {url}, which is not in the repository"
    assert target.is_relative_to(ROOT), f"README.md links outside the repository: {url}"
    if anchor and target.suffix == ".md":
        assert anchor in _anchors(target), f"README.md links to {url}: {target.name} has no heading with that anchor"


def test_the_anchor_rule_is_githubs():
    assert _anchor("Experiment trackers: `--log` and `rbols export`") == "experiment-trackers---log-and-rbols-export"
    assert _anchor("The paper's claims at this scale") == "the-papers-claims-at-this-scale"
    assert _anchor("Which epoch is scored: checkpoint selection") == "which-epoch-is-scored-checkpoint-selection"
