"""``python -m cfexp.serving``: arguments, settings, engine, server, exit codes.

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 2 for bad arguments or
settings or a missing model file, 3 when the address cannot be bound.
Arguments are parsed in two steps: argparse reads the raw strings, then
:func:`cfexp.serving.settings.parse_settings` validates the engine settings.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path

from cfexp.errors import CfexpError, ConfigError
from cfexp.serving.admission import AdmissionQueue
from cfexp.serving.engines import build_engine
from cfexp.serving.exchange import Services
from cfexp.serving.faults import FaultInjector
from cfexp.serving.ground_truth import GroundTruthLog
from cfexp.serving.routes import App
from cfexp.serving.server import ServeOptions, bind, serve
from cfexp.serving.settings import ENGINES, parse_settings, read_settings_argument
from cfexp.signals import die_with_parent

logger = logging.getLogger("cfexp.serving")

EXIT_OK = 0
EXIT_BAD_SETTINGS = 2
EXIT_BIND_FAILED = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cfexp.serving",
        description=(
            "An LLM server speaking the Ollama and OpenAI APIs, "
            "with a simulated or a real (llama.cpp) engine."
        ),
    )
    parser.add_argument(
        "--engine", choices=ENGINES, required=True, help="sim: timing model; llamacpp: the real model"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 = any free port (default)")
    parser.add_argument(
        "--settings",
        default="{}",
        help="engine settings: a JSON object, or @path/to/file.json (see docs/serving.md)",
    )
    parser.add_argument(
        "--ground-truth", type=Path, default=None, help="append one JSON line per generation request here"
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--die-with-parent",
        action="store_true",
        help="exit when the process that started this one dies (set by cfexp for managed servers)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the server; returns the process exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed its message
        return EXIT_OK if exc.code == 0 else EXIT_BAD_SETTINGS
    if args.die_with_parent and not die_with_parent():
        return EXIT_OK  # the parent is already gone: nobody wants this server
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = parse_settings(args.engine, read_settings_argument(args.settings))
    except ConfigError as exc:
        logger.error("%s", exc)
        return EXIT_BAD_SETTINGS
    if not 0 <= args.port <= 65535:
        logger.error("bad port <port=%d>: give 0 (any free port) or 1 to 65535", args.port)
        return EXIT_BAD_SETTINGS
    try:
        # Bind before loading a model: a taken port fails in milliseconds.
        server = bind(ServeOptions(args.host, args.port))
    except OSError as exc:
        logger.error(
            "cannot bind <host=%s port=%d>: %s; choose another port or --port 0",
            args.host,
            args.port,
            exc.strerror or exc,
        )
        return EXIT_BIND_FAILED
    try:
        engine = build_engine(args.engine, settings)
    except CfexpError as exc:
        logger.error("%s", exc)
        server.server_close()
        return EXIT_BAD_SETTINGS
    ground_truth = GroundTruthLog(args.ground_truth) if args.ground_truth else None
    services = Services(
        engine=engine,
        queue=AdmissionQueue(engine.slots),
        faults=FaultInjector(settings.faults),
        ground_truth=ground_truth,
        stopping=threading.Event(),
        extensions=settings.timings,
    )
    serve(server, App(services), threading.Event())
    return EXIT_OK
