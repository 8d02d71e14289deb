"""The README is a short front door, and every relative link and ``#anchor`` in it and in docs/ resolves.

A link resolves when the file it names exists (relative to the page, inside the
repository) and, when it has an ``#anchor``, when the target Markdown file has a
heading whose GitHub-style slug is that anchor. Links to ``http(s)`` and
``mailto`` addresses are not followed; links inside code blocks and code spans
are not links.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from urllib.parse import unquote

from tests.conftest import REPO_ROOT

#: The README is the front door: longer than this and the reference belongs under docs/.
README_MAX_LINES = 260

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
_NOT_A_SETEXT_TITLE = re.compile(r"^ {0,3}(?:[#>|*+-]|\d+[.)] |$)")
#: ``[text](target "title")`` and ``![alt](target)``; the text may hold one level of brackets.
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>\n]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)"
    r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)")
#: ``[text][label]``: a full reference, whose label must be defined.
_FULL_REFERENCE = re.compile(r"\[(?:[^\[\]]|\[[^\[\]]*\])+\]\[([^\[\]]+)\]")
_REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[([^\]]+)\]:[ \t]*(<[^>\n]*>|\S+)", re.M)
_HTML_TARGET = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*[\"']([^\"']*)[\"']", re.I)
_FOLLOWED_NOT = ("http://", "https://", "mailto:")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def without_fences(text: str) -> str:
    """``text`` with fenced code blocks blanked out, line breaks kept (a ``#`` line in one is no heading)."""
    lines, fence = [], None
    for line in text.split("\n"):
        opening = _FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
            lines.append("")
        elif fence is not None:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence) \
                    and not line.strip().lstrip(fence[0]):
                fence = None
            lines.append("")
        else:
            lines.append(line)
    return "\n".join(lines)


def without_code(text: str) -> str:
    """``text`` with fenced code blocks and code spans blanked out, line breaks kept."""
    return _blank_code_spans(without_fences(text))


def _blank_code_spans(text: str) -> str:
    """Code spans (a run of backticks to the next run of the same length, within a paragraph) blanked."""
    out, i = [], 0
    while i < len(text):
        if text[i] != "`":
            out.append(text[i])
            i += 1
            continue
        run = len(text[i:]) - len(text[i:].lstrip("`"))
        ticks = "`" * run
        close = re.compile(rf"(?<!`){ticks}(?!`)")
        end = close.search(text, i + run)
        paragraph_end = text.find("\n\n", i + run)
        if end is None or (paragraph_end != -1 and end.start() > paragraph_end):
            out.append(ticks)  # no closing run: literal backticks
            i += run
            continue
        out.append(re.sub(r"[^\n]", " ", text[i:end.end()]))
        i = end.end()
    return "".join(out)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text, lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`+([^`]*)`+", r"\1", heading)
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> list[str]:
    """Every heading anchor of a Markdown page, in order, repeated slugs numbered as GitHub does."""
    found: list[str] = []
    seen: dict[str, int] = {}
    lines = without_fences(text).split("\n")
    for number, line in enumerate(lines):
        heading = _ATX_HEADING.match(line)
        if heading:
            title = heading.group(2) or ""
        elif (number > 0 and _SETEXT_UNDERLINE.match(line) and lines[number - 1].strip()
              and not _NOT_A_SETEXT_TITLE.match(lines[number - 1])):
            title = lines[number - 1]
        else:
            continue
        slug = github_slug(title)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.append(slug if count == 0 else f"{slug}-{count}")
    return found


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link, image and reference definition outside code."""
    plain = without_code(text)
    found = []
    for pattern in (_INLINE_LINK, _REFERENCE_DEFINITION, _HTML_TARGET):
        for match in pattern.finditer(plain):
            target = match.group(2) if pattern is _REFERENCE_DEFINITION else match.group(1)
            found.append((plain.count("\n", 0, match.start()) + 1, target.strip("<>")))
    return sorted(found)


def broken_links(pages: list[Path], root: Path) -> list[str]:
    """Every link of ``pages`` that does not resolve, as ``page:line: link 'target': why``."""
    problems = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        shown = page.relative_to(root).as_posix()
        plain = without_code(text)
        defined = {label.strip().lower() for label, _ in _REFERENCE_DEFINITION.findall(plain)}
        for match in _FULL_REFERENCE.finditer(plain):
            if match.group(1).strip().lower() not in defined:
                line = plain.count("\n", 0, match.start()) + 1
                problems.append(f"{shown}:{line}: reference [{match.group(1)}] is defined nowhere on the page")
        for line, target in links(text):
            why = _why_broken(page, target, root)
            if why:
                problems.append(f"{shown}:{line}: link {target!r}: {why}")
    return problems


def _why_broken(page: Path, target: str, root: Path) -> str | None:
    if target.lower().startswith(_FOLLOWED_NOT):
        return None
    if _SCHEME.match(target) or target.startswith("//"):
        return "not a relative link, and not http(s) or mailto"
    path_part, _, anchor = target.partition("#")
    path_part = unquote(path_part)
    if path_part.startswith("/"):
        return "starts with '/': write it relative to the page"
    resolved = (page.parent / path_part).resolve() if path_part else page.resolve()
    if not resolved.is_relative_to(root.resolve()):
        return "points outside the repository"
    if not resolved.exists():
        return f"no file {resolved.relative_to(root.resolve()).as_posix()}"
    if not anchor:
        return None
    if resolved.is_dir() or resolved.suffix.lower() != ".md":
        return f"#{anchor} on {resolved.name}, which is no Markdown page"
    known = anchors(resolved.read_text(encoding="utf-8"))
    if unquote(anchor) in known:
        return None
    close = difflib.get_close_matches(unquote(anchor), known, n=3)
    hint = f"; did you mean {', '.join('#' + c for c in close)}?" if close else ""
    return f"no heading with anchor #{anchor} in {resolved.relative_to(root.resolve()).as_posix()}{hint}"


def doc_pages(root: Path = REPO_ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


# -- the repository's own pages ---------------------------------------------------------------

def test_every_relative_link_and_anchor_in_the_readme_and_docs_resolves():
    pages = doc_pages()
    assert len(pages) > 1, "docs/ holds no Markdown page"
    problems = broken_links(pages, REPO_ROOT)
    assert problems == [], "links that do not resolve:\n  " + "\n  ".join(problems)


def test_the_readme_is_a_front_door_of_at_most_260_lines():
    lines = (REPO_ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines, more than {README_MAX_LINES}: move the depth to a page under docs/ "
        f"and link it")


def test_every_page_under_docs_is_linked_from_the_readme():
    readme = REPO_ROOT / "README.md"
    linked = {(readme.parent / unquote(target.partition("#")[0])).resolve()
              for _, target in links(readme.read_text(encoding="utf-8")) if target.partition("#")[0]}
    orphans = [page.relative_to(REPO_ROOT).as_posix() for page in doc_pages()[1:] if page.resolve() not in linked]
    assert orphans == [], f"pages under docs/ that README.md links nowhere: {orphans}"


# -- the checker itself -----------------------------------------------------------------------

def _page(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_the_checker_finds_a_broken_file_link_and_a_broken_anchor_and_nothing_else(tmp_path):
    _page(tmp_path / "docs" / "b.md", "# B page\n\n## Real heading: `--flag` and NRP's rule\n\n## Twice\n\n## Twice\n")
    _page(tmp_path / "docs" / "picture.png", "not really a picture")
    a = _page(tmp_path / "README.md", "\n".join([
        "# Front door",                                                            # 1
        "",                                                                        # 2
        "[fine](docs/b.md) and [fine too](docs/b.md#real-heading---flag-and-nrps-rule)",  # 3
        "![a picture](docs/picture.png) [here](#local-heading) [second](docs/b.md#twice-1)",  # 4
        "[no such file](docs/missing.md)",                                         # 5
        "[no such heading](docs/b.md#not-a-heading)",                              # 6
        "[no such local heading](#nowhere)",                                       # 7
        "`[in a code span](docs/absent-1.md)` and [web](https://example.invalid/x) "
        "[mail](mailto:someone@example.invalid)",                                  # 8
        "```markdown",                                                             # 9
        "[in a fence](docs/absent-2.md)",                                          # 10
        "```",                                                                     # 11
        "## Local heading",                                                        # 12
        "[a link that breaks",                                                     # 13
        "across lines](docs/absent-3.md) and [ref][undefined] and [image rebuild]", # 14
        "",                                                                        # 15
        "[image rebuild]: docs/absent-4.md",                                       # 16
    ]) + "\n")
    problems = broken_links([a, tmp_path / "docs" / "b.md"], tmp_path)
    assert problems == [
        "README.md:14: reference [undefined] is defined nowhere on the page",
        "README.md:5: link 'docs/missing.md': no file docs/missing.md",
        "README.md:6: link 'docs/b.md#not-a-heading': no heading with anchor #not-a-heading in docs/b.md",
        "README.md:7: link '#nowhere': no heading with anchor #nowhere in README.md",
        "README.md:13: link 'docs/absent-3.md': no file docs/absent-3.md",
        "README.md:16: link 'docs/absent-4.md': no file docs/absent-4.md",
    ]


def test_a_near_miss_anchor_is_named_with_the_headings_it_may_have_meant(tmp_path):
    _page(tmp_path / "docs" / "b.md", "# B\n\n## Exit statuses\n")
    a = _page(tmp_path / "README.md", "[x](docs/b.md#exit-status)\n")
    [problem] = broken_links([a], tmp_path)
    assert problem.endswith("did you mean #exit-statuses?")


def test_links_that_leave_the_repository_or_use_another_scheme_are_refused(tmp_path):
    root = tmp_path / "repo"
    _page(tmp_path / "outside.md", "# Outside\n")
    a = _page(root / "README.md", "[up](../outside.md) [abs](/README.md) [file](file:///etc/hosts)\n")
    assert broken_links([a], root) == [
        "README.md:1: link '../outside.md': points outside the repository",
        "README.md:1: link '/README.md': starts with '/': write it relative to the page",
        "README.md:1: link 'file:///etc/hosts': not a relative link, and not http(s) or mailto",
    ]


def test_slugs_follow_github():
    text = "\n".join(["# Settings: every `PROTBENCH_*` variable", "## Relaunching: `--relaunch` and `--extend`",
                      "### A window's files", "## Twice", "## Twice", "Setext title", "---",
                      "```", "# not a heading", "```", "## [Linked](x.md) heading"])
    assert anchors(text) == ["settings-every-protbench_-variable", "relaunching---relaunch-and---extend",
                             "a-windows-files", "twice", "twice-1", "setext-title", "linked-heading"]
