"""The graph `bench.served` puts behind LangGraph Server (`langgraph dev`): the agent of
bench/langgraph_turns.py, `create_react_agent` with a streaming `ChatOpenAI`, against the scripted
model whose URL is in BENCH_LLM_URL.

The server loads this file by path (langgraph.json), not as part of the `bench` package.
"""

from __future__ import annotations

import os
import warnings

from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

with warnings.catch_warnings():
    # Still the agent the issue names (moved to `langchain.agents` in LangGraph 1.0).
    warnings.simplefilter("ignore")
    from langgraph.prebuilt import create_react_agent


@tool
def echo(text: str) -> str:
    """Echo the text back."""
    # What the MCP test server's `echo` (chatd's tool in the same benchmark) returns.
    return text


model = ChatOpenAI(  # type: ignore[call-arg]
    model="bench-model",
    base_url=os.environ["BENCH_LLM_URL"],
    api_key="sk-bench",  # type: ignore[arg-type]
    streaming=True,
    stream_usage=True,
    # chatd's shared client makes no retries of its own either.
    max_retries=0,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    graph = create_react_agent(model, [echo])
