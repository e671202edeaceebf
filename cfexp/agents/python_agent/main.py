"""Command line, event-loop runtime and exit status of the Python agent.

    python -m cfexp.agents.python_agent --spec SPEC.json --out RECORDS.jsonl
        [--runtime asyncio|uvloop] [--log-level INFO]

Exit status (docs/record-schema.md section 1):
0 every agent workflow succeeded; 1 a call or workflow failed (records are
complete); 2 bad spec or invocation (nothing was sent); 3 internal error, a
bug: the traceback is on stderr and the ``done`` record is missing.

Diagnostics go to stderr through ``logging``; stdout stays free.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from time import monotonic_ns
from typing import Any

from cfexp import __version__
from cfexp.agents.python_agent.client import new_client, warm_up
from cfexp.agents.python_agent.workflow import AgentData, RunContext, load_data, run_all
from cfexp.agents.records import DoneRecord, ReadyRecord, RecordWriter
from cfexp.agents.spec import Spec
from cfexp.errors import ConfigError
from cfexp.vocab import PYTHON_RUNTIMES, Language, Runtime

log = logging.getLogger("cfexp.agents.python_agent")

EXIT_OK, EXIT_FAILED, EXIT_BAD_SPEC, EXIT_INTERNAL = 0, 1, 2, 3

# asyncio.run or uvloop.run: takes the top coroutine, returns its result.
LoopRunner = Callable[[Coroutine[Any, Any, bool]], bool]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cfexp.agents.python_agent",
        description="Run the agent workflows of a spec and write JSONL records.",
    )
    parser.add_argument("--spec", required=True, type=Path, help="spec JSON written by the harness")
    parser.add_argument("--out", required=True, type=Path, help="records JSONL to write")
    parser.add_argument(
        "--runtime",
        choices=[r.value for r in PYTHON_RUNTIMES],
        default=None,
        help="event loop (default: the spec's runtime field, else asyncio)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="stderr log level",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage to stderr
        return EXIT_BAD_SPEC if exc.code else EXIT_OK
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request at INFO; the agent's own call records say more.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        spec = Spec.load(args.spec)
        data = load_data(spec)
        runtime = Runtime(args.runtime or spec.runtime or Runtime.asyncio)
        runner = _loop_runner(runtime)
        writer = _open_writer(args.out)
    except ConfigError as exc:
        log.error("bad spec: %s", exc)
        return EXIT_BAD_SPEC
    try:
        with writer:
            success = runner(_run(spec, data, writer, runtime))
    except Exception:
        log.exception("internal error in the Python agent (a bug): no done record written")
        return EXIT_INTERNAL
    return EXIT_OK if success else EXIT_FAILED


def _open_writer(path: Path) -> RecordWriter:
    try:
        return RecordWriter(path)
    except OSError as exc:
        raise ConfigError(f"cannot write the records <out={path}>: {exc}") from exc


def _loop_runner(runtime: Runtime) -> LoopRunner:
    """``asyncio.run`` or ``uvloop.run``; uvloop is imported only when chosen."""
    if runtime == Runtime.asyncio:
        return asyncio.run
    try:
        import uvloop
    except ImportError as exc:
        raise ConfigError(f"<runtime={runtime}> needs uvloop: pip install uvloop") from exc
    return uvloop.run


async def _run(spec: Spec, data: AgentData, writer: RecordWriter, runtime: Runtime) -> bool:
    async with contextlib.AsyncExitStack() as stack:
        clients = {
            agent.name: await stack.enter_async_context(new_client((agent,), spec.call_timeout_s))
            for agent in spec.agents
        }
        await warm_up()
        # Spec, data files, HTTP client and event loop are ready; the first request is next.
        writer.write(
            ReadyRecord(
                run_id=spec.run_id,
                language=Language.python,
                runtime=runtime,
                agent_version=__version__,
                t_ready_ns=monotonic_ns(),
            )
        )
        success = await run_all(RunContext(spec=spec, data=data, clients=clients, writer=writer))
    writer.write(DoneRecord(run_id=spec.run_id, success=success, t_end_ns=monotonic_ns()))
    return success
