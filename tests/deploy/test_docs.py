"""The README and docs/: every relative link and #anchor resolves, as GitHub renders them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.markdown import DOCS, anchors, broken_links, link_targets, section, slug
from tests.servers import ROOT

PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    assert not broken_links(page), f"{page.relative_to(ROOT)}: {broken_links(page)}"


def test_the_readme_links_every_docs_page() -> None:
    linked = {target.partition("#")[0] for target in link_targets((ROOT / "README.md").read_text())}
    assert {f"docs/{page.name}" for page in DOCS.glob("*.md")} <= linked


def test_the_readme_starts_with_the_two_commands() -> None:
    intro = (ROOT / "README.md").read_text().split("\n## ", 1)[0]
    commands = [
        line.split("#")[0].strip() for line in intro.splitlines() if line.startswith("make ")
    ]
    assert commands == ["make run", "make test"]


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Restore runbook: Redis", "restore-runbook-redis"),
        ("Kubernetes (`deploy/k8s`)", "kubernetes-deployk8s"),
        ('How age and "stuck" are decided', "how-age-and-stuck-are-decided"),
        ("Redis Cluster, Sentinel and TLS", "redis-cluster-sentinel-and-tls"),
        ("snake_case and two  spaces", "snake_case-and-two--spaces"),
        ("See [the guide](x.md)", "see-the-guide"),
    ],
)
def test_anchors_are_githubs(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_the_checker_finds_a_broken_file_or_anchor(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## Part\n\n## Part\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md#part-1) [ok](#page) [ok](other.md) [web](https://example.com/x#y)\n"
        "[gone](missing.md) [bad anchor](other.md#part-2) [here](#nowhere)\n"
        "[outside](../elsewhere.md) `[code](ignored.md)`\n\n"
        "```\n[fenced](ignored.md)\n# not a heading\n```\n\n"
        "[ref]: other.md#nope\n"
    )
    (tmp_path.parent / "elsewhere.md").write_text("# Elsewhere\n")
    assert broken_links(page, root=tmp_path) == [
        "missing.md: no such file",
        "other.md#part-2: no heading makes #part-2",
        "#nowhere: no heading makes #nowhere",
        "../elsewhere.md: no such file",
        "other.md#nope: no heading makes #nope",
    ]
    assert anchors(page) == {"page"}


def test_an_image_that_is_a_link_counts_both() -> None:
    assert link_targets("[![shot](docs/a.png)](docs/a.md) ![b](b.png) [c](c.md)") == [
        "docs/a.png",
        "b.png",
        "docs/a.md",
        "c.md",
    ]


def test_a_section_ends_at_the_next_heading_of_its_level(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# T\n\n## A\n\none\n\n### A.1\n\ntwo\n\n## B\n\nthree\n")
    assert section(page, "A") == "\none\n\n### A.1\n\ntwo\n\n"
    with pytest.raises(AssertionError, match="no section '## C'"):
        section(page, "C")


def test_the_lock_library_acl_example_is_the_minimal_user_for_its_pattern() -> None:
    """The guide's pottery example is the documented minimal user with only the prefix changed."""
    [minimal] = [
        line
        for line in section(DOCS / "configuration.md", "A minimal Redis user").splitlines()
        if line.startswith("ACL SETUSER lockmon")
    ]
    [example] = [
        line
        for line in (DOCS / "lock-libraries.md").read_text().splitlines()
        if line.startswith("ACL SETUSER lockmon")
    ]
    expected = minimal.replace("%R~lock:*", "%R~redlock:*").replace(
        "&__keyspace@0__:lock:appointment:*", "&__keyspace@0__:redlock:*"
    )
    assert example == expected
