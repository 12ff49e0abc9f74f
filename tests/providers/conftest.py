from tests.fakes.fixtures import llm, sink, sleep, wire

__all__ = ["llm", "sink", "sleep", "wire"]
