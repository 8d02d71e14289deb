"""docs/development.md's picture of the library's layers is the code's: every module in it once, no import going up."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_layers import PACKAGE_DIR, import_graph

LAYERS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "development.md"
_LAYER = re.compile(r"^\*\*(\d+)\. ([^*]+)\*\*")
_MODULE = re.compile(r"^- `([a-z_0-9]+)\.py`: \S")


def page_layers(text: str) -> dict[str, int]:
    """Module -> its layer's number, from the page's ``module-layers`` section."""
    match = re.search(r"<!-- module-layers:start -->\n(.*?)<!-- module-layers:end -->", text, re.S)
    assert match, "docs/development.md has no <!-- module-layers:start --> ... <!-- module-layers:end --> section"
    layers: dict[str, int] = {}
    layer = None
    for line in match.group(1).splitlines():
        if heading := _LAYER.match(line):
            layer = int(heading.group(1))
        elif module := _MODULE.match(line):
            assert layer is not None, f"docs/development.md names {module.group(1)}.py before any layer heading"
            assert module.group(1) not in layers, f"docs/development.md names {module.group(1)}.py twice"
            layers[module.group(1)] = layer
        elif line.strip():
            pytest.fail(f"docs/development.md's module-layers section has a line that is neither a layer nor "
                        f"a module: {line!r}")
    return layers


def upward_imports(graph: dict[str, set[str]], layers: dict[str, int]) -> list[str]:
    """Every import of a module from a later layer than the importer's, as ``a (layer 2) -> b (layer 4)``."""
    return [f"{module} (layer {layers[module]}) -> {other} (layer {layers[other]})"
            for module in sorted(graph) for other in sorted(graph[module])
            if module in layers and other in layers and layers[other] > layers[module]]


def test_the_layers_page_names_every_module_of_the_library_once_and_no_other():
    layers = page_layers(LAYERS_PAGE.read_text(encoding="utf-8"))
    modules = {path.stem for path in PACKAGE_DIR.glob("*.py")} - {"__init__"}
    assert sorted(modules - set(layers)) == [], "modules missing from docs/development.md's layers: add a line for each"
    assert sorted(set(layers) - modules) == [], "docs/development.md's layers name modules that do not exist"


def test_no_module_imports_one_of_a_later_layer_on_the_layers_page():
    problems = upward_imports(import_graph(PACKAGE_DIR), page_layers(LAYERS_PAGE.read_text(encoding="utf-8")))
    assert problems == [], "imports that go up docs/development.md's layers:\n  " + "\n  ".join(problems)


def test_an_upward_import_and_a_missing_module_are_both_found():
    text = ("<!-- module-layers:start -->\n**1. Low**: x.\n- `low.py`: low.\n**2. High**: y.\n"
            "- `high.py`: high.\n<!-- module-layers:end -->\n")
    layers = page_layers(text)
    assert layers == {"low": 1, "high": 2}
    assert upward_imports({"low": {"high"}, "high": set()}, layers) == ["low (layer 1) -> high (layer 2)"]
    assert upward_imports({"low": set(), "high": {"low"}}, layers) == []


@pytest.mark.parametrize("section, complaint", [
    ("- `a.py`: a.\n", "before any layer heading"),
    ("**1. L**: x.\n- `a.py`: a.\n- `a.py`: again.\n", "twice"),
    ("**1. L**: x.\nsomething else\n", "neither a layer nor a module"),
])
def test_a_malformed_picture_is_refused_naming_the_line(section, complaint):
    with pytest.raises((AssertionError, pytest.fail.Exception), match=complaint):
        page_layers(f"<!-- module-layers:start -->\n{section}<!-- module-layers:end -->\n")
