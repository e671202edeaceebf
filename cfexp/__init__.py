"""cfexp: a declarative experiment manager for benchmarking LLM agents."""

__version__ = "0.1.0"
