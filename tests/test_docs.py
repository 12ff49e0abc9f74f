"""The documentation in the repository stays true: every setting is in docs/configuration.md with
its variable, flag and the code's default, and the README and docs link only to files that exist."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import typer.main

from chatd.cli import app
from chatd.settings import Settings

REPO = Path(__file__).resolve().parent.parent
CONFIGURATION = REPO / "docs" / "configuration.md"
SETTINGS_HEADER = ["Variable", "Flag", "Default", "Meaning"]


@dataclass(frozen=True)
class Row:
    variable: str
    flags: frozenset[str]
    default: str
    line: int


def documented_settings() -> list[Row]:
    """The rows of every `| Variable | Flag | Default | Meaning |` table of configuration.md."""
    rows: list[Row] = []
    in_table = False
    for number, line in enumerate(CONFIGURATION.read_text().splitlines(), 1):
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells == SETTINGS_HEADER:
            in_table = True
        elif in_table and not set(cells[0]) <= {"-", ":"}:
            variable = cells[0].strip("`")
            rows.append(Row(variable, frozenset(re.findall(r"`(--[a-z-]+)`", cells[1])), cells[2], number))
    return rows


def first_code(cell: str) -> str | None:
    m = re.match(r"`([^`]*)`", cell)
    return m.group(1) if m else None


def test_every_setting_has_a_row_in_the_configuration_reference_and_every_row_a_setting() -> None:
    rows = documented_settings()
    variables = [r.variable for r in rows]
    expected = {f"CHATD_{name.upper()}" for name in Settings.model_fields}
    missing = sorted(expected - set(variables))
    assert not missing, f"settings missing from docs/configuration.md (add a row to a | Variable | Flag | Default | Meaning | table): {missing}"
    unknown = sorted(set(variables) - expected)
    assert not unknown, f"rows of docs/configuration.md that name no setting of chatd/settings.py: {unknown}"
    assert len(variables) == len(set(variables)), "a setting has two rows"


def test_the_documented_defaults_are_the_code_s_defaults() -> None:
    rows = {r.variable: r for r in documented_settings()}
    for name, field in Settings.model_fields.items():
        row = rows[f"CHATD_{name.upper()}"]
        where = f"docs/configuration.md:{row.line} ({row.variable})"
        if field.default_factory is not None:
            # Computed at start (a directory of the platform, a fresh id): described in words.
            assert row.default, where
            continue
        shown = first_code(row.default)
        assert shown is not None, f"{where}: the default must start with the value in backticks, e.g. `{field.default}`"
        value = field.default
        if isinstance(value, bool):
            assert shown == str(value).lower(), f"{where}: documented {shown}, the code says {value}"
        elif isinstance(value, int | float):
            assert float(shown) == value, f"{where}: documented {shown}, the code says {value}"
        elif value == "":
            assert shown == '""', f"{where}: documented {shown}, the code's default is empty"
        else:
            assert shown == str(value), f"{where}: documented {shown}, the code says {value}"


def test_the_flags_of_chatd_serve_are_documented_on_the_rows_of_their_settings() -> None:
    serve = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    by_variable: dict[str, set[str]] = {}
    for param in serve.params:
        # Typer's options are not always click.Option instances (it carries its own click).
        if envvar := getattr(param, "envvar", None):
            by_variable.setdefault(str(envvar), set()).update(o for o in param.opts if o.startswith("--"))
    assert by_variable, "found no option of `chatd serve` with an environment variable"
    rows = {r.variable: r for r in documented_settings()}
    for variable, flags in by_variable.items():
        assert variable in rows, variable
        assert flags <= rows[variable].flags, f"{variable}: `chatd serve` has {sorted(flags)}, the docs list {sorted(rows[variable].flags)}"
    serve_flags = {o for p in serve.params for o in getattr(p, "opts", [])}
    for row in rows.values():
        assert row.flags <= serve_flags, f"{row.variable}: the docs list {sorted(row.flags - serve_flags)}, which `chatd serve` does not have"


def test_the_readme_and_the_docs_link_only_to_files_in_the_repository() -> None:
    pages = [REPO / "README.md", REPO / "ARCHITECTURE.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists() or REPO not in path.parents:
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, broken
    readme = (REPO / "README.md").read_text()
    assert "../shared" not in readme and "SPEC.md" not in readme
