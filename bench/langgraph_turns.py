"""The same conversations as bench/turns.py through a LangGraph ReAct agent, in-process.

    uv run --frozen --with langgraph --with langchain-openai python -m bench.langgraph_turns --n 10,100

N concurrent runs of `langgraph.prebuilt.create_react_agent` with `ChatOpenAI` (streaming, usage
on) against the same scripted server in its own process (`bench.turns.LLMProcess`, K = 5 steps:
four answer with text and an `echo` call, the last with text only, 20 ms per stream event), each
run followed with `stream_mode="messages"` as a client would follow its tokens, with an in-memory
checkpointer (what `langgraph dev` keeps). Next to it, in the same run, the bare client of
bench/turns.py: wall ratio and CPU per streamed event compare with that file's table. `chunks/run`
is what a run's follower received (LangGraph's message chunks; the bare client's SSE events). This is
LangGraph in-process (no LangGraph Server, no HTTP API in front), like chatd's rows there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid
from typing import Any

from bench.turns import LLMProcess, Script, peak_rss_mb, run_bare


async def run_langgraph(n: int, k: int, token_delay: float, text_chars: int) -> tuple[float, float, int, int]:
    import warnings

    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.checkpoint.memory import InMemorySaver

    with warnings.catch_warnings():
        # Still the agent the issue names (moved to `langchain.agents` in LangGraph 1.0).
        warnings.simplefilter("ignore")
        from langgraph.prebuilt import create_react_agent

    @tool
    def echo(x: int = 0) -> str:
        """Echo the arguments back."""
        return json.dumps({"echo": {"x": x}})

    script = Script(k, text_chars)
    with LLMProcess(script, token_delay) as base_url:
        model = ChatOpenAI(model="bench-model", base_url=base_url, api_key="sk-bench", streaming=True, stream_usage=True, max_retries=0)  # type: ignore[arg-type]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            agent = create_react_agent(model, [echo], checkpointer=InMemorySaver())

        async def one() -> tuple[int, bool]:
            config = {"configurable": {"thread_id": str(uuid.uuid4())}, "recursion_limit": 4 * k + 4}
            chunks, last = 0, None
            async for message, _meta in agent.astream({"messages": [("user", "go")]}, config, stream_mode="messages"):  # type: ignore[arg-type]
                chunks += 1
                last = message
            done = last is not None and getattr(last, "type", "") in ("AIMessageChunk", "ai") and not getattr(last, "tool_calls", None)
            return chunks, done

        await one()  # warm-up, as for chatd and the bare client
        start, cpu0 = time.perf_counter(), time.process_time()
        results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    failed = sum(1 for r in results if isinstance(r, BaseException) or not r[1])
    for r in results:
        if isinstance(r, BaseException):
            print(f"  a run failed: {r!r}", file=sys.stderr)
            break
    chunks = sum(r[0] for r in results if not isinstance(r, BaseException))
    return wall, cpu, failed, chunks


def _child(system: str, n: int, a: argparse.Namespace) -> dict[str, Any] | None:
    cmd = [sys.executable, "-m", "bench.langgraph_turns", "--one", system, "--n", str(n), "--k", str(a.k), "--token-delay", str(a.token_delay), "--text-chars", str(a.text_chars)]
    out = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        print(f"  run {system} N={n} failed (exit {out.returncode})", file=sys.stderr)
        return None
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.langgraph_turns", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", default="10,100")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--token-delay", type=float, default=0.02)
    p.add_argument("--text-chars", type=int, default=100)
    p.add_argument("--one", choices=["bare", "langgraph"], help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    events_per_chat = Script(a.k, a.text_chars).events()
    if a.one:
        n = int(a.n)
        if a.one == "bare":
            r = asyncio.run(run_bare(n, a.k, a.token_delay, a.text_chars))
            row = {"wall": r.wall, "cpu": r.cpu, "failed": r.failed, "chunks": r.events}
        else:
            wall, cpu, failed, chunks = asyncio.run(run_langgraph(n, a.k, a.token_delay, a.text_chars))
            row = {"wall": wall, "cpu": cpu, "failed": failed, "chunks": chunks}
        row["rss_mb"] = peak_rss_mb()
        print(json.dumps(row), flush=True)
        return
    print(f"K = {a.k}, {events_per_chat} stream events per chat, {a.token_delay * 1000:g} ms each")
    print(f"{'system':<10}{'N':>6}{'wall s':>9}{'ratio':>8}{'CPU s':>8}{'CPU us/event':>14}{'peak RSS MB':>13}{'failed':>8}{'chunks/run':>12}")
    for n in (int(x) for x in a.n.split(",")):
        bare = _child("bare", n, a)
        for system, row in (("bare", bare), ("langgraph", _child("langgraph", n, a))):
            if row is None:
                continue
            ratio = f"{row['wall'] / bare['wall']:8.2f}" if bare else f"{'-':>8}"
            per_event = row["cpu"] / (n * events_per_chat) * 1e6
            print(f"{system:<10}{n:>6}{row['wall']:>9.2f}{ratio}{row['cpu']:>8.2f}{per_event:>14.0f}{row['rss_mb']:>13.0f}{row['failed']:>8}{row['chunks'] / n:>12.0f}", flush=True)


if __name__ == "__main__":
    main()
