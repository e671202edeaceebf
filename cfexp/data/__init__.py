"""The data files every agent reads, whatever its language: prompts, personas, corpus.

``DATA_DIR`` is the one place cfexp names this folder; the spec hands it to
the agents (docs/record-schema.md §5).
"""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
