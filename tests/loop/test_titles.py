"""Generated titles are cleaned of what models wrap them in: a `Title:` label, quotes, markdown."""

from __future__ import annotations

import pytest

from chatd.loop.quickgen import normalize_title


@pytest.mark.parametrize(
    ("raw", "title"),
    [
        ("Title: Fix the login bug", "Fix the login bug"),
        ("title:Fix the login bug", "Fix the login bug"),
        ('Title: "Fix the login bug"', "Fix the login bug"),
        ('"Title: Fix the login bug"', "Fix the login bug"),
        ("**Title:** Fix the login bug", "Fix the login bug"),
        ("# Title: Weekly plan.", "Weekly plan"),
        ("Chat title - Trip to Lisbon", "Trip to Lisbon"),
        ("“Trip to Lisbon”", "Trip to Lisbon"),
        ("'Trip to Lisbon'", "Trip to Lisbon"),
        ("  Trip\n to   Lisbon!  ", "Trip to Lisbon"),
    ],
)
def test_generated_title_loses_its_label_and_quotes(raw: str, title: str) -> None:
    assert normalize_title(raw) == title


@pytest.mark.parametrize("raw", ["Titles of old books", "Subtitle: rules", "Entitled to refunds", "__init__ files"])
def test_a_title_that_only_contains_the_word_is_kept(raw: str) -> None:
    assert normalize_title(raw) == raw


def test_a_bare_label_leaves_nothing_so_the_fallback_is_used() -> None:
    assert normalize_title('Title: ""') == ""
