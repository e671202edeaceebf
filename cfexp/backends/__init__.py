"""Backends: the LLM servers a job measures against — started, attached to, stopped.

Not to be confused with :mod:`cfexp.serving`, which *is* an LLM server (cfexp's
own, run as its own process). This package starts or attaches to servers of
every kind and manages their lifecycle and topology:

- ``pool`` hands a job its instances (per job, per sweep, external) and
  registers the backends (``backend_for``);
- ``cfexp_server`` starts cfexp's own server (``python -m cfexp.serving``:
  ``llamacpp`` and ``sim``); ``llama_server`` (+ ``llama_server_build``)
  llama.cpp's llama-server; ``external`` Ollama and OpenAI-compatible servers;
- ``process`` the child process every managed server is; ``host_lock`` one
  job's real servers per host; ``warmup`` the untimed calls before each phase;
  ``identify`` what answered; ``model_files`` the embedded GGUF.
"""
