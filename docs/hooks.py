"""MkDocs hooks for the keras_drop site (declared in `mkdocs.yml`).

- Every public name must have a docstring and an entry (a `::: name`
  directive, or its module's) in the docs: a warning otherwise, which
  `mkdocs build --strict` turns into a failure. The names are those of
  `keras_drop.__all__`, `keras_drop.ops.__all__` and
  `keras_drop.recipes.__all__`, read from the source with griffe, as
  mkdocstrings reads them.
- The home page includes sections of README.md (`--8<-- "README.md:NAME"`)
  whose links point into `docs/` from the checkout's root: the hook inserts
  them with those links made relative to the site.
- Each notebook in `notebooks/` becomes a page (`notebooks/NAME.md`) with
  its markdown, its code and the outputs it was saved with, pictures
  included, so the site shows the executed notebook without running it.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path

import griffe
from mkdocs.structure.files import File

LOG = logging.getLogger("mkdocs.hooks.keras_drop")
PACKAGE = "keras_drop"
PUBLIC_MODULES = ("keras_drop", "keras_drop.ops", "keras_drop.recipes")
DIRECTIVE = re.compile(r"^:::\s+(\S+)", re.MULTILINE)
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
README_LINK = re.compile(r"\]\(docs/")
README_INCLUDE = re.compile(r'^--8<-- "README.md:(\w+)"$', re.MULTILINE)


def _root(config) -> Path:
    return Path(config.config_file_path).parent


def _documented(package, identifiers: set[str]) -> set[str]:
    """The paths the `::: identifier` directives render: each object, and
    the public members of each module."""
    paths = set()
    for identifier in identifiers:
        obj = package.modules_collection[identifier]
        paths |= {identifier, obj.canonical_path}
        if obj.is_module:
            names = obj.exports or [n for n in obj.members if not n.startswith("_")]
            for name in map(str, names):
                member = obj[name]
                paths |= {f"{identifier}.{name}", member.canonical_path}
    return paths


def check_public_api(config) -> None:
    root = _root(config)
    identifiers = set()
    for page in Path(config.docs_dir).rglob("*.md"):
        identifiers |= set(DIRECTIVE.findall(page.read_text(encoding="utf-8")))
    package = griffe.load(PACKAGE, search_paths=[str(root)])
    documented = _documented(package, identifiers)
    for module_path in PUBLIC_MODULES:
        module = package.modules_collection[module_path]
        for name in map(str, module.exports or []):
            obj = module[name]
            path = f"{module_path}.{name}"
            if obj.docstring is None or not obj.docstring.value.strip():
                LOG.warning("public name %s has no docstring", path)
            if path not in documented and obj.canonical_path not in documented:
                LOG.warning(
                    "public name %s has no `::: %s` entry in %s", path, path, "docs/"
                )


def notebook_markdown(path: Path, stem: str) -> tuple[str, dict[str, bytes]]:
    """A notebook as markdown, and the pictures its outputs hold."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    parts: list[str] = []
    pictures: dict[str, bytes] = {}
    for cell in notebook["cells"]:
        source = "".join(cell["source"]).rstrip()
        if cell["cell_type"] == "markdown":
            parts.append(source)
            continue
        if cell["cell_type"] != "code" or not source:
            continue
        parts.append(f"```python\n{source}\n```")
        for output in cell.get("outputs", []):
            if output["output_type"] == "stream":
                text = ANSI.sub("", "".join(output["text"])).rstrip()
                parts.append(f"```text\n{text}\n```")
                continue
            data = output.get("data", {})
            if "image/png" in data:
                name = f"{stem}_{len(pictures) + 1}.png"
                pictures[name] = base64.b64decode("".join(data["image/png"]))
                parts.append(f"![Output {len(pictures)}]({name})")
            elif "text/plain" in data:
                text = "".join(data["text/plain"]).rstrip()
                parts.append(f"```text\n{text}\n```")
    source_note = (
        f"*Rendered from `notebooks/{path.name}` as it was saved, with its outputs.*"
    )
    return "\n\n".join([*parts, source_note]) + "\n", pictures


def on_config(config):
    check_public_api(config)
    return config


def on_files(files, config):
    for path in sorted((_root(config) / "notebooks").glob("*.ipynb")):
        markdown, pictures = notebook_markdown(path, path.stem)
        files.append(
            File.generated(config, f"notebooks/{path.stem}.md", content=markdown)
        )
        for name, content in pictures.items():
            files.append(File.generated(config, f"notebooks/{name}", content=content))
    return files


def readme_section(root: Path, name: str) -> str:
    """The section NAME of README.md, its links into `docs/` made relative
    to the site."""
    readme = (root / "README.md").read_text(encoding="utf-8")
    start = f"<!-- --8<-- [start:{name}] -->"
    end = f"<!-- --8<-- [end:{name}] -->"
    section = readme.split(start, 1)[1].split(end, 1)[0]
    return README_LINK.sub("](", section.strip("\n"))


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "index.md":
        return markdown
    root = _root(config)
    return README_INCLUDE.sub(lambda m: readme_section(root, m[1]), markdown)
