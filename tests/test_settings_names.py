"""Settings keep reading their former names, so an upgrade does not silently drop a deployment's
configuration."""

from __future__ import annotations

import pytest

from chatd.settings import Settings


def test_the_tool_result_limit_reads_its_former_mcp_name_and_the_new_one_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHATD_TOOL_RESULT_MAX_CHARS", raising=False)
    monkeypatch.setenv("CHATD_MCP_MAX_RESULT_CHARS", "5000")
    assert Settings().tool_result_max_chars == 5000
    monkeypatch.setenv("CHATD_TOOL_RESULT_MAX_CHARS", "7000")
    assert Settings().tool_result_max_chars == 7000
    assert Settings(tool_result_max_chars=9000).tool_result_max_chars == 9000
