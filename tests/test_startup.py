"""`chatd serve` starts fast: the provider SDKs and the web push client are imported when first
used, not at start (together they were more than half of the start-up CPU, ~3 s of ~5.5 s)."""

from __future__ import annotations

import subprocess
import sys

# Loaded on first use only: a model of that kind, the connection test, the first web push.
LAZY = ("anthropic", "openai", "google.genai", "pydantic_ai.models.anthropic", "pydantic_ai.models.openai", "pydantic_ai.models.google", "pywebpush")


def test_starting_the_server_imports_no_provider_sdk_and_no_push_client() -> None:
    code = "import sys, chatd.cli, chatd.server; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "chatd.api.app" in loaded  # the whole server was imported
    assert sorted(m for m in LAZY if m in loaded) == []
