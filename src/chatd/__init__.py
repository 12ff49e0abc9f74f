"""chatd: a self-hostable agent chat daemon."""

__version__ = "0.1.0"
