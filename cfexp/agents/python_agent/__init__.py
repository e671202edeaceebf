"""The Python agent: ``python -m cfexp.agents.python_agent --spec S --out R``.

A separate process the harness starts and measures from outside; it speaks
the contract of docs/record-schema.md (spec in, JSONL records out) exactly
like the Rust agent. Modules: ``stream`` (pure stream parsers), ``prompts``
(pure text rules), ``client`` (one measured HTTP call), ``workflow`` (the
scenarios), ``main`` (command line, runtime, exit status).

Nothing is imported here: process start to ``ready`` is a measured number.
"""
