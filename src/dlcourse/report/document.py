"""The report as a document: the claims table, the sections, the environment, in Markdown (for the
code host) and in one self-contained HTML page (every image embedded, for anywhere)."""

from __future__ import annotations

import base64
import html
import mimetypes
from pathlib import Path

from markdown_it import MarkdownIt

from .environment import environment_section
from ..files import atomic_path

def claims_table(claims: dict[str, dict]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")  # a pipe would end the cell

    rows = ["| claim | the course says | measured | holds |", "| --- | --- | --- | --- |"]
    for claim_id, c in claims.items():
        rows.append(f"| **{claim_id}**: {cell(c['claim'])} | « {cell(c['course'])} » | {cell(c['measured'])} | "
                    f"{'✅ yes' if c['holds'] else '❌ no'} |")
    return "\n".join(rows)


TITLE = "The course's results, reproduced"


def document(claims: dict[str, dict], sections: list[str], env: dict) -> str:
    held = sum(c["holds"] for c in claims.values())
    parts = [f"# {TITLE}\n\n{held} of {len(claims)} course claims hold on this run.\n",
             "## Claims\n\n" + claims_table(claims) + "\n", *sections, environment_section(env)]
    return "\n".join(part.rstrip("\n") + "\n" for part in parts)


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


def data_uri(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image shown in the report is missing; the stage that writes it has not run")
    mime, _ = mimetypes.guess_type(path.name)
    if mime is None or not mime.startswith("image/"):
        raise ValueError(f"{path}: the report shows it as an image, but it is not one")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


STYLE = """body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem;
       line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; }
code { background: #f3f3f3; padding: 0 0.2rem; }"""


def markdown_to_html(markdown: str, base_dir: Path) -> str:
    """One HTML page from the Markdown, every image (a path relative to `base_dir`) embedded as a data URI."""
    parser = _markdown_parser()
    tokens = parser.parse(markdown)
    for image in _images(tokens):
        image.attrSet("src", data_uri(Path(base_dir) / image.attrGet("src")))
    body = parser.renderer.render(tokens, parser.options, {})
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(TITLE)}</title>\n'
            f"<style>\n{STYLE}\n</style>\n</head>\n<body>\n{body}</body>\n</html>\n")


def write_report(markdown: str, reports_dir: Path) -> None:
    """reports_dir/report.md, and reports_dir/report.html with the same content and every image inside it."""
    page = markdown_to_html(markdown, reports_dir)  # first: a missing image stops before anything is written
    with atomic_path(Path(reports_dir) / "report.md") as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    with atomic_path(Path(reports_dir) / "report.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
