"""Generate the course's code from the notebooks' export cells: the package and ``previous_chapters.py``.

A code cell whose first line is ``#| export`` is part of the course's library. From those cells
this command writes

* ``gpt_from_scratch/chNN.py``: one module per chapter with export cells (main notebook first,
  then companions by name). A module imports what it uses from earlier chapters explicitly
  (``from .ch04 import GPTModel``); scripts, tests and readers import the package.
* ``chNN_*/previous_chapters.py``: for a folder whose notebooks import it, the names they import
  (``from previous_chapters import ...``, subprocess scripts included) and every top-level definition
  those need, transitively, from the export cells of earlier chapters and of the folder's own
  notebooks; one self-contained file (one file next to a notebook is enough, e.g. in Colab).
* the first code cell of every notebook (the setup cell) and the "Open in Colab" link above it, and the
  Colab links in ``README.md``, from ``shared/colab.py``.

Every generated block starts with a ``# Source:`` line naming its notebook and section. Generated
Python is formatted with ruff, so ``ruff format --check`` holds for it too.

    python -m tools.export          # regenerate
    python -m tools.export --check  # exit 1 if anything differs (tests/test_tools_export.py checks drift)
"""

from __future__ import annotations

import argparse
import ast
import builtins
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `python tools/export.py` works as well as `python -m tools.export`

from shared.colab import LINK_MARKER, SETUP_MARKER, colab_link_cell, setup_cell, with_colab_links  # noqa: E402

EXPORT_MARKER = "#| export"
COMMAND = "python -m tools.export"
PACKAGE = "gpt_from_scratch"
GENERATED = "previous_chapters.py"
SETUP_TAG = "nbval-ignore-output"  # the setup cell prints the mode, which differs by run
IMPORTS_PREVIOUS = re.compile(r"^\s*(from previous_chapters import|import previous_chapters)", re.M)
LINE_LENGTH = 110  # as in pyproject.toml
HEADING = re.compile(r"^#{1,6}\s+(.*\S)\s*$", re.M)


@dataclass(frozen=True)
class ExportCell:
    """One export cell: where it comes from and its code (marker line removed)."""

    notebook: Path
    index: int  # position among the notebook's cells, from 0
    section: str  # the nearest heading above the cell, e.g. "4.2 Layer normalization"
    source: str

    def provenance(self, root: Path) -> str:
        """The one-line comment that names this cell's notebook and section."""
        where = self.notebook.relative_to(root).as_posix()
        line = f"# Source: {where}, {self.section}" if self.section else f"# Source: {where}"
        return line if len(line) <= LINE_LENGTH else line[: LINE_LENGTH - 3].rstrip() + "..."


class ExportError(ValueError):
    """The export cells cannot be turned into a package (a name defined twice, say)."""


def chapter_dirs(root: Path = ROOT) -> list[Path]:
    """The chapter folders (``chNN_name``), in order."""
    return sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"ch\d\d_\w+", p.name))


def chapter_notebooks(chapter: Path) -> list[Path]:
    """A chapter's notebooks: the main ``chNN.ipynb`` first, then companions by name."""
    main = chapter / f"{chapter.name[:4]}.ipynb"
    others = sorted(p for p in chapter.glob("*.ipynb") if p != main)
    return ([main] if main.exists() else []) + others


def _cell_source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _cells(notebook: Path) -> list[dict]:
    return json.loads(notebook.read_text(encoding="utf-8"))["cells"]


def export_cells(notebook: Path) -> list[ExportCell]:
    """A notebook's export cells, each with the section heading it sits under."""
    found, section = [], ""
    for index, cell in enumerate(_cells(notebook)):
        src = _cell_source(cell)
        if cell["cell_type"] == "markdown":
            headings = HEADING.findall(src)
            if headings:
                section = headings[-1]
            continue
        first, _, rest = src.partition("\n")
        if cell["cell_type"] == "code" and first.strip() == EXPORT_MARKER:
            found.append(ExportCell(notebook, index, section, rest.strip("\n")))
    return found


def chapter_cells(chapter: Path) -> list[ExportCell]:
    """The export cells of every notebook of a chapter, in order."""
    return [cell for nb in chapter_notebooks(chapter) for cell in export_cells(nb)]


def imports_previous_chapters(chapter: Path) -> bool:
    """True when a code cell of one of the chapter's notebooks imports ``previous_chapters``."""
    return any(
        cell["cell_type"] == "code" and IMPORTS_PREVIOUS.search(_cell_source(cell))
        for nb in chapter_notebooks(chapter)
        for cell in _cells(nb)
    )


def module_name(chapter: Path) -> str:
    """The package module of a chapter folder: ``ch04_gpt_model`` -> ``ch04``."""
    return chapter.name[:4]


def _split_imports(source: str, where: str) -> tuple[list[str], str]:
    """Top-level import statements of a cell, and the cell without them."""
    tree = ast.parse(source, filename=where)
    lines = source.splitlines()
    imports, drop = [], set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append(" ".join(ln.strip() for ln in lines[node.lineno - 1 : node.end_lineno]))
            drop.update(range(node.lineno - 1, node.end_lineno))
    body = "\n".join(ln for i, ln in enumerate(lines) if i not in drop).strip("\n")
    return imports, body


def defined_names(source: str) -> list[str]:
    """Names a cell defines at the top level (functions, classes, assignments), in order."""
    names = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
    return names


def used_names(source: str) -> set[str]:
    """Every plain name a cell mentions (loads, annotations, defaults)."""
    return {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}


def definitions(root: Path = ROOT) -> dict[str, list[ExportCell]]:
    """Each top-level name defined by an export cell, with every cell that defines it."""
    found: dict[str, list[ExportCell]] = {}
    for chapter in chapter_dirs(root):
        for cell in chapter_cells(chapter):
            for name in defined_names(cell.source):
                found.setdefault(name, []).append(cell)
    return found


def defined_twice(root: Path = ROOT) -> dict[str, list[str]]:
    """Names defined by more than one export cell (one name, one meaning), with where."""
    return {
        name: [c.provenance(root).removeprefix("# Source: ") for c in cells]
        for name, cells in definitions(root).items()
        if len(cells) > 1
    }


def _import_block(imports: list[str]) -> str:
    """Imports deduplicated and sorted as ruff's isort does: standard library, third party, local."""
    unique = list(dict.fromkeys(imports))

    def module(line: str) -> str:
        return line.split()[1].split(".")[0]

    def order(line: str) -> tuple:
        return (line.startswith("from"), line.split()[1].lower(), line.lower())

    local = sorted((i for i in unique if i.startswith("from .")), key=order)
    rest = [i for i in unique if not i.startswith("from .")]
    stdlib = sorted((i for i in rest if module(i) in sys.stdlib_module_names), key=order)
    others = sorted((i for i in rest if module(i) not in sys.stdlib_module_names), key=order)
    return "\n\n".join("\n".join(group) for group in (stdlib, others, local) if group)


def _ruff(args: list[str], text: str, filename: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--stdin-filename", filename, "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if result.returncode != 0:
        hint = "install requirements-test.txt" if "No module named ruff" in result.stderr else "see above"
        raise ExportError(f"ruff {args[0]} failed on {filename} ({hint}):\n{result.stderr}")
    return result.stdout


def ruff_format(text: str, filename: str) -> str:
    """``text`` with imports sorted and code formatted by ruff, with the project's settings."""
    text = _ruff(["check", "--quiet", "--select", "I", "--fix", "--exit-zero"], text, filename)
    return _ruff(["format", "--quiet"], text, filename)


def _assemble(header: str, imports: list[str], blocks: list[str], filename: str) -> str:
    body = "\n\n\n".join(blocks)
    parts = [header.rstrip("\n")]
    if imports:
        parts.append(_import_block(imports))
    parts.append(body)
    return ruff_format("\n\n\n".join(parts) + "\n", filename)


def _blocks(cells: list[ExportCell], root: Path) -> tuple[list[str], list[str]]:
    """Imports and provenance-stamped code blocks of ``cells``."""
    imports: list[str] = []
    blocks: list[str] = []
    for cell in cells:
        found, body = _split_imports(cell.source, f"{cell.notebook.name} cell {cell.index}")
        imports += found
        if body:
            blocks.append(cell.provenance(root) + "\n" + body)
    return imports, blocks


def _title(chapter: Path) -> str:
    """The first heading of a chapter's main notebook (``Chapter 4: ...``)."""
    for cell in _cells(chapter_notebooks(chapter)[0]):
        if cell["cell_type"] == "markdown":
            headings = HEADING.findall(_cell_source(cell))
            if headings:
                return headings[0]
    return chapter.name


def package_module_source(chapter: Path, root: Path = ROOT) -> str:
    """The expected contents of ``gpt_from_scratch/chNN.py`` for a chapter with export cells."""
    twice = defined_twice(root)
    if twice:
        lines = "\n".join(f"  {name}: {', '.join(where)}" for name, where in sorted(twice.items()))
        raise ExportError(f"names defined by more than one export cell (one name, one meaning):\n{lines}")
    cells = chapter_cells(chapter)
    imports, blocks = _blocks(cells, root)
    own = {name for cell in cells for name in defined_names(cell.source)}
    earlier: dict[str, str] = {}  # name -> module of the earlier chapter that defines it
    for other in chapter_dirs(root):
        if other.name >= chapter.name:
            break
        for cell in chapter_cells(other):
            for name in defined_names(cell.source):
                earlier[name] = module_name(other)
    needed: dict[str, set[str]] = {}
    used = set().union(*(used_names(c.source) for c in cells)) - own - set(dir(builtins))
    for name in used & earlier.keys():
        needed.setdefault(earlier[name], set()).add(name)
    for module, names in needed.items():
        imports.append(f"from .{module} import {', '.join(sorted(names, key=str.lower))}")
    notebooks = ", ".join(nb.relative_to(root).as_posix() for nb in chapter_notebooks(chapter))
    header = (
        f"# AUTOGENERATED by `{COMMAND}` from the `{EXPORT_MARKER}` cells of\n# {notebooks}.\n"
        "# Do not edit: change the notebook, then run the command again.\n"
        f'"""{_title(chapter)}: the code the chapter builds."""\n'
    )
    return _assemble(header, imports, blocks, f"{PACKAGE}/{module_name(chapter)}.py")


PREVIOUS_IMPORT = re.compile(r"^[ \t]*from previous_chapters import (\([^)]*\)|[^\n]*)", re.M)


def imported_from_previous(notebook: Path) -> set[str]:
    """Names a notebook imports with ``from previous_chapters import ...`` (in subprocess scripts too)."""
    names: set[str] = set()
    for cell in _cells(notebook):
        if cell["cell_type"] != "code":
            continue
        for match in PREVIOUS_IMPORT.finditer(_cell_source(cell)):
            spec = match[1].split("#")[0] if not match[1].startswith("(") else match[1]
            node = ast.parse("from previous_chapters import " + spec.strip()).body[0]
            names |= {alias.name for alias in node.names}
    return names


def _loaded_names(node: ast.AST) -> set[str]:
    """Plain names a statement reads: bodies, defaults, decorators, annotations, bases."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Store)}


@dataclass(frozen=True)
class _Statement:
    cell: ExportCell
    node: ast.stmt
    defines: tuple[str, ...]
    uses: frozenset[str]


def _statements(cells: list[ExportCell]) -> list[_Statement]:
    found = []
    for cell in cells:
        for node in ast.parse(cell.source).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            defines = tuple(defined_names(ast.unparse(node)))
            found.append(_Statement(cell, node, defines, frozenset(_loaded_names(node))))
    return found


def closure(wanted: set[str], cells: list[ExportCell]) -> set[str]:
    """The top-level names of ``cells`` that ``wanted`` needs, transitively (``wanted`` included)."""
    by_name = {name: st for st in _statements(cells) for name in st.defines}
    missing = wanted - by_name.keys()
    if missing:
        raise ExportError(f"imported from previous_chapters but defined by no export cell: {sorted(missing)}")
    keep, todo = set(), list(wanted)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        todo += [used for used in by_name[name].uses if used in by_name and used not in keep]
    return keep


def _import_bindings(node: ast.Import | ast.ImportFrom) -> list[tuple[str, str]]:
    """(bound name, one-name import statement) for each name an import binds."""
    out = []
    for alias in node.names:
        if isinstance(node, ast.Import):
            bound = alias.asname or alias.name.split(".")[0]
            text = f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
        else:
            bound = alias.asname or alias.name
            module = "." * node.level + (node.module or "")
            text = f"from {module} import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
        out.append((bound, text))
    return out


def _kept_blocks(cells: list[ExportCell], keep: set[str], root: Path) -> tuple[list[str], list[str]]:
    """Imports and provenance-stamped blocks of only the statements that define a name in ``keep``."""
    imports: list[str] = []
    blocks: list[str] = []
    needed: set[str] = set()
    for cell in cells:
        lines = cell.source.splitlines()
        tree = ast.parse(cell.source)
        drop: set[int] = set()
        kept_any = False
        bindings = []
        for node in tree.body:
            start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
            while start > 0 and lines[start - 1].lstrip().startswith("#") and (start - 1) not in drop:
                start -= 1  # comments right above a statement go with it
            span = range(start, node.end_lineno)
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                bindings += _import_bindings(node)
                drop.update(span)
            elif set(defined_names(ast.unparse(node))) & keep:
                kept_any = True
                needed |= _loaded_names(node)
            else:
                drop.update(span)
        for bound, text in bindings:
            if bound in needed:
                imports.append(text)
        if kept_any:
            body = "\n".join(ln for i, ln in enumerate(lines) if i not in drop).strip("\n")
            body = re.sub(r"\n{4,}", "\n\n\n", body)
            blocks.append(cell.provenance(root) + "\n" + body)
    return imports, blocks


def previous_cells(chapter: Path, root: Path = ROOT) -> list[ExportCell]:
    """Export cells a folder's notebooks may import from: earlier chapters', then the folder's own."""
    earlier = [c for c in chapter_dirs(root) if c.name < chapter.name]
    return [cell for c in [*earlier, chapter] for cell in chapter_cells(c)]


def previous_chapters_names(chapter: Path, root: Path = ROOT) -> set[str]:
    """The closure of what the folder's notebooks import from ``previous_chapters``."""
    wanted = set().union(*(imported_from_previous(nb) for nb in chapter_notebooks(chapter)))
    return closure(wanted, previous_cells(chapter, root))


def previous_chapters_source(chapter: Path, root: Path = ROOT) -> str:
    """The expected ``chapter/previous_chapters.py``: what its notebooks import, and what that needs."""
    cells = previous_cells(chapter, root)
    keep = previous_chapters_names(chapter, root)
    imports, blocks = _kept_blocks(cells, keep, root)
    sources = dict.fromkeys(
        c.notebook.relative_to(root).as_posix() for c in cells if set(defined_names(c.source)) & keep
    )
    names = "".join(f"#   {name}\n" for name in sources)
    header = (
        f"# AUTOGENERATED by `{COMMAND}` from the `{EXPORT_MARKER}` cells of\n{names}"
        "# only what this folder's notebooks import from it, and what that needs.\n"
        "# Do not edit: change the notebooks, then run the command again.\n"
        '"""Code from earlier chapters of the course, for use next to this chapter\'s notebooks."""\n'
    )
    return _assemble(header, imports, blocks, f"{chapter.name}/{GENERATED}")


def package_init_source() -> str:
    """The expected contents of ``gpt_from_scratch/__init__.py`` (the same whatever the chapters)."""
    return (
        f"# AUTOGENERATED by `{COMMAND}`. Do not edit.\n"
        '"""The course\'s code, generated from the notebooks\' export cells: one module per chapter\n'
        "with export cells (``ch02``, ``ch03``, ...), each importing what it needs from earlier ones.\n\n"
        "Example: ``from gpt_from_scratch.ch04 import GPTModel``.\n"
        '"""\n'
    )


def _with_setup_cell(notebook: Path, root: Path = ROOT) -> str | None:
    """The notebook's JSON text with its setup cell and the Colab-link cell above it regenerated.

    None if the notebook has no setup cell. The link cell is a Markdown cell just above the setup cell
    (inserted if missing); both come from ``shared/colab.py``.
    """
    text = notebook.read_text(encoding="utf-8")
    nb = json.loads(text)
    cells = nb["cells"]
    first = next((i for i, c in enumerate(cells) if c["cell_type"] == "code"), None)
    if first is None or not _cell_source(cells[first]).startswith(SETUP_MARKER):
        return None
    setup = cells[first]
    setup["source"] = setup_cell(notebook.parent.name, notebook.name).splitlines(keepends=True)
    setup.setdefault("metadata", {})["tags"] = sorted({*setup["metadata"].get("tags", []), SETUP_TAG})
    link = colab_link_cell(notebook.relative_to(root).as_posix()).splitlines(keepends=True)
    above = cells[first - 1] if first > 0 else None
    if above is not None and above["cell_type"] == "markdown" and _cell_source(above).startswith(LINK_MARKER):
        above["source"] = link
    else:
        cells.insert(first, {"cell_type": "markdown", "id": "colab-link", "metadata": {}, "source": link})
    new = json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    return text if json.loads(text) == json.loads(new) else new


def planned_files(root: Path = ROOT) -> dict[Path, str]:
    """Every generated file (and notebook with a setup cell) with its expected text."""
    files: dict[Path, str] = {}
    chapters = chapter_dirs(root)
    for chapter in chapters:
        if chapter_cells(chapter):
            files[root / PACKAGE / f"{module_name(chapter)}.py"] = package_module_source(chapter, root)
        if imports_previous_chapters(chapter):
            files[chapter / GENERATED] = previous_chapters_source(chapter, root)
    files[root / PACKAGE / "__init__.py"] = package_init_source()
    for chapter in chapters:
        for notebook in chapter_notebooks(chapter):
            text = _with_setup_cell(notebook, root)
            if text is not None:
                files[notebook] = text
    readme = root / "README.md"
    if readme.is_file():  # its "Open in Colab" links point at the repository configured in shared/colab.py
        files[readme] = with_colab_links(readme.read_text(encoding="utf-8"))
    return files


def stale_generated(root: Path = ROOT) -> list[Path]:
    """Generated files that exist but are no longer planned (a chapter stopped importing them)."""
    planned = planned_files(root)
    candidates = [c / GENERATED for c in chapter_dirs(root)] + sorted((root / PACKAGE).glob("ch*.py"))
    return [p for p in candidates if p.exists() and p not in planned]


def drift(root: Path = ROOT) -> list[Path]:
    """Generated files whose contents differ from what the generator would write, or that should go."""
    stale = [
        p
        for p, text in planned_files(root).items()
        if not p.exists() or p.read_text(encoding="utf-8") != text
    ]
    return stale + stale_generated(root)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report drift, write nothing")
    args = parser.parse_args(argv)
    root = ROOT
    try:
        if args.check:
            stale = drift(root)
            for path in stale:
                print(f"out of date: {path.relative_to(root)}")
            if stale:
                print(f"Run `{COMMAND}` to regenerate.")
            return 1 if stale else 0
        for path in stale_generated(root):
            path.unlink()
            print(f"removed {path.relative_to(root)}")
        for path, text in planned_files(root).items():
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
                print(f"wrote {path.relative_to(root)}")
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
