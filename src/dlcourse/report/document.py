"""The report as a document: the claims table, the sections, the environment, in Markdown (for the
code host) and in one self-contained HTML page (every image embedded, for anywhere)."""

from __future__ import annotations

import base64
import html
import mimetypes
import re
from itertools import pairwise
from pathlib import Path

from markdown_it import MarkdownIt

from .environment import environment_section
from ..files import atomic_path


def verdict(holds: bool) -> str:
    """In words, readable without an emoji font."""
    return "holds" if holds else "**FAILS**"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a pipe would end the cell


def claims_table(claims: dict[str, dict], link: str = "") -> str:
    """One short line per claim: its id, linking to its section (`link` + "#" + id: the report's
    claim sections, whose headings are the ids), the figure judged against its bar, the verdict."""
    rows = ["| claim | measured (bar) | verdict |", "| --- | --- | --- |"]
    rows += [f"| [{claim_id}]({link}#{claim_id}) | {_cell(c['summary'])} | {verdict(c['holds'])} |"
             for claim_id, c in claims.items()]
    return "\n".join(rows)


def claim_sections(claims: dict[str, dict]) -> str:
    """Each claim in full under a heading of its id: what is checked, the course's words, and
    everything measured."""
    parts = ["## The claims in detail\n"]
    for claim_id, c in claims.items():
        parts.append(f"### {claim_id}\n\n**{verdict(c['holds']).strip('*')}.** {c['claim']}\n\n"
                     f"The course: « {c['course']} »\n\nMeasured: {c['measured']}\n")
    return "\n".join(parts)


TITLE = "The course's results, reproduced"


def document(claims: dict[str, dict], sections: list[str], env: dict) -> str:
    held = sum(c["holds"] for c in claims.values())
    parts = [f"# {TITLE}\n\n{held} of {len(claims)} course claims hold on this run.\n",
             "## Claims\n\n" + claims_table(claims) + "\n", claim_sections(claims), *sections,
             environment_section(env)]
    return "\n".join(part.rstrip("\n") + "\n" for part in parts)


def heading_slug(text: str) -> str:
    """The anchor the code host gives a heading: lower case, punctuation but `-` and `_` dropped,
    spaces as `-`; report.html gives its headings the same ids, so that one link works in both."""
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def _heading_anchors(tokens) -> list:
    """(heading token, its anchor) in order; a repeated slug gets -1, -2, ... as on the code host."""
    seen: dict[str, int] = {}
    anchors = []
    for heading, inline in pairwise(tokens):
        if heading.type == "heading_open":
            slug = heading_slug(inline.content)
            anchors.append((heading, slug if slug not in seen else f"{slug}-{seen[slug]}"))
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def heading_anchors(markdown: str) -> list[str]:
    """The anchors of a Markdown document's headings, as links to them (`page.md#anchor`) name them."""
    return [anchor for _, anchor in _heading_anchors(_markdown_parser().parse(markdown))]


def link_targets(markdown: str) -> list[str]:
    """Every link's and image's target in a Markdown document."""
    tokens = _markdown_parser().parse(markdown)
    children = [child for token in tokens for child in token.children or []]
    return [child.attrGet("href") for child in children if child.type == "link_open"] + \
        [child.attrGet("src") for child in children if child.type == "image"]


def _markdown_parser() -> MarkdownIt:
    return MarkdownIt("commonmark").enable("table")


def _images(tokens) -> list:
    return [child for token in tokens for child in token.children or [] if child.type == "image"]


def image_sources(markdown: str) -> list[str]:
    return [image.attrGet("src") for image in _images(_markdown_parser().parse(markdown))]


def unlisted_figures(markdown: str, base_dir: Path, figures_dir: Path) -> list[Path]:
    """The PNGs under `figures_dir` that the document (whose images are relative to `base_dir`) does not show."""
    shown = {(Path(base_dir) / src).resolve() for src in image_sources(markdown)}
    return [path for path in sorted(Path(figures_dir).rglob("*.png")) if path.resolve() not in shown]


def image_type(path: Path) -> str:
    """The MIME type of an image the report shows; a missing file or one that is not an image stops it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image shown in the report is missing; the stage that writes it has not run")
    mime, _ = mimetypes.guess_type(path.name)
    if mime is None or not mime.startswith("image/"):
        raise ValueError(f"{path}: the report shows it as an image, but it is not one")
    return mime


def data_uri(path: Path) -> str:
    return f"data:{image_type(path)};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


STYLE = """body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem;
       line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; }
code { background: #f3f3f3; padding: 0 0.2rem; }"""


def markdown_to_html(markdown: str, base_dir: Path, embed: bool = True) -> str:
    """One HTML page from the Markdown, every image (a path relative to `base_dir`) embedded as a data
    URI, or with `embed` False linked where it lies (and checked to be there)."""
    parser = _markdown_parser()
    tokens = parser.parse(markdown)
    for heading, anchor in _heading_anchors(tokens):
        heading.attrSet("id", anchor)
    for image in _images(tokens):
        path = Path(base_dir) / image.attrGet("src")
        if embed:
            image.attrSet("src", data_uri(path))
        else:
            image_type(path)
    body = parser.renderer.render(tokens, parser.options, {})
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(TITLE)}</title>\n'
            f"<style>\n{STYLE}\n</style>\n</head>\n<body>\n{body}</body>\n</html>\n")


def write_report(markdown: str, reports_dir: Path) -> None:
    """reports_dir/report.md, and reports_dir/report.html: the same document as a web page, its images
    linked where they lie in the checkout (both committed; a self-contained copy goes to MLflow)."""
    page = markdown_to_html(markdown, reports_dir, embed=False)  # first: a missing image stops before anything is written
    with atomic_path(Path(reports_dir) / "report.md") as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    with atomic_path(Path(reports_dir) / "report.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
