"""The ``cfexp`` console script: tools around the Hydra application.

    cfexp serve sim --port 11434            # the simulator, standalone
    cfexp serve llamacpp --port 8080        # the embedded model, standalone
    cfexp ui                                # MLflow UI on the default store
    cfexp report --experiment tr115         # report.md + CSVs + PNGs in reports/tr115/
    cfexp sync                              # upload runs kept while the tracking server was unreachable
    cfexp --version                         # the installed version

Experiments themselves run with ``python -m cfexp`` (Hydra).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cfexp.errors import CfexpError, ConfigError, SetupError
from cfexp.tracking.tags import VIEW_KEY, VIEW_TAG

if TYPE_CHECKING:
    from cfexp.backends.process import ManagedProcess


def serve_settings(args: argparse.Namespace) -> dict[str, object]:
    """The engine settings ``cfexp serve`` starts the server with."""
    from cfexp.serving.settings import read_settings_argument  # inline JSON or @file; a clear ConfigError

    settings: dict[str, object] = read_settings_argument(args.settings) if args.settings else {}
    settings.setdefault("model_name", args.model_name)
    # No flag: the engine's own default (cfexp.serving.settings), the "server defaults"
    # a baseline of options_mode=server_defaults runs against.
    if args.ctx is not None:
        settings.setdefault("n_ctx", args.ctx)
    if args.gpu_layers is not None:
        settings.setdefault("n_gpu_layers", args.gpu_layers)
    settings.setdefault("slots", args.slots)
    if args.backend == "llamacpp":
        from cfexp.backends.model_files import embedded_gguf

        settings.setdefault("n_threads", args.threads)
        settings.setdefault("model_path", args.model_file or str(embedded_gguf()))
    return settings


def _serve(args: argparse.Namespace) -> int:
    from cfexp.serving import main as serving_main

    settings = serve_settings(args)
    argv = [
        "--engine", args.backend,
        "--host", args.host,
        "--port", str(args.port),
        "--settings", json.dumps(settings),
    ]
    if args.ground_truth:
        argv += ["--ground-truth", args.ground_truth]
    return serving_main(argv)


def runs_page(base_url: str, experiment: Mapping[str, Any]) -> str:
    """The MLflow UI's page of an experiment's runs table (from its REST API's experiment).

    MLflow 3's UI opens an experiment on the GenAI "Overview" of traces unless the
    page is asked for the "machine learning" workflow; cfexp's view
    (``cfexp.tracking.store.ui_tags``) adds the key metrics as columns.
    """
    query = "workflowType=machine_learning"
    if any(tag.get("key") == VIEW_TAG for tag in experiment.get("tags", [])):
        query += f"&viewStateShareKey={VIEW_KEY}"
    return f"{base_url}/#/experiments/{experiment['experiment_id']}/runs?{query}"


def _ui(args: argparse.Namespace) -> int:
    """MLflow's UI in a child process group that stops with cfexp (Ctrl-C, SIGTERM, or cfexp's death)."""
    from cfexp.backends.net import port_free
    from cfexp.backends.process import ManagedProcess
    from cfexp.childproc import launcher_path
    from cfexp.signals import Terminated, install_cleanup_handlers

    install_cleanup_handlers()  # SIGTERM takes Ctrl-C's path; the UI is stopped at exit
    mlruns = Path(args.mlruns).resolve()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{mlruns}/mlflow.db"
    base_url = f"http://127.0.0.1:{args.port}"
    if not port_free("127.0.0.1", args.port):
        raise SetupError(f"<port={args.port}> is in use on 127.0.0.1: stop what listens there, or pass --port")
    # One worker: a UI for one person, and a smaller tree to start and stop.
    argv = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--port", str(args.port), "--workers", "1"]
    print("running:", " ".join(argv), flush=True)
    launcher = launcher_path()
    if launcher is not None:  # the UI stops even if cfexp is killed outright (PR_SET_PDEATHSIG)
        argv = [str(launcher), str(mlruns / "ui.rusage.json"), *argv]
    process = ManagedProcess("mlflow-ui", argv, mlruns / "ui.log", echo=sys.stderr)
    try:
        experiments = _wait_for_ui(process, base_url, args.timeout)
        if experiments is None:
            print(f"cfexp: the MLflow UI did not start; its log: {process.log_path}", file=sys.stderr)
            return 1
        print(f"MLflow UI: {base_url} (Ctrl-C stops it)", flush=True)
        for experiment in experiments:
            print(f"  {experiment['name']}: {runs_page(base_url, experiment)}", flush=True)
        return process.popen.wait()
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        return 128 + (exc.signum if isinstance(exc, Terminated) else signal.SIGINT)
    finally:
        process.stop()


def _wait_for_ui(process: ManagedProcess, base_url: str, timeout_s: float) -> list[dict[str, Any]] | None:
    """The store's experiments once the UI answers (MLflow's "Default" left out); None if it exited or timed out."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.alive():
        try:
            response = httpx.get(f"{base_url}/api/2.0/mlflow/experiments/search", params={"max_results": 1000})
        except httpx.HTTPError:
            time.sleep(0.5)
            continue
        if response.status_code == 200:
            found = response.json().get("experiments", [])
            return [e for e in found if not (e["experiment_id"] == "0" and e["name"] == "Default")]
        time.sleep(0.5)
    return None


def _report(args: argparse.Namespace) -> int:
    # Imported here: pandas, scipy and matplotlib are for this command only.
    from cfexp.report import ReportOptions, SuccessRule, generate_report
    from cfexp.report.success import DEFAULT_METRIC
    from cfexp.tracking.query import default_uri

    options = ReportOptions(
        experiment=args.experiment,
        tracking_uri=args.tracking_uri or default_uri(),
        out_dir=Path(args.out) if args.out else None,
        filter_string=args.filter or "",
        sweeps=tuple(args.sweeps or ()),
        all_runs=args.all_runs,
        alpha=args.alpha,
        success_rule=SuccessRule(
            metric=args.success_metric or DEFAULT_METRIC, higher=args.higher_is_better, alpha=args.alpha,
            baseline=_baseline(args.baseline),
        ),
        success_metric_given=args.success_metric is not None,
        study_storage=args.study_storage,
    )
    path = generate_report(options)
    print(f"report written: {path}")
    return 0


def _baseline(text: str | None) -> dict[str, str] | None:
    """``key=value[,key=value]`` -> a dict; a malformed one is a ConfigError naming it."""
    if not text:
        return None
    items = [item.strip() for item in text.split(",")]
    bad = [item for item in items if "=" not in item or not item.split("=", 1)[0].strip()]
    if bad:
        raise ConfigError(
            f"<baseline={text}> is not key=value[,key=value] (cannot read {', '.join(repr(b) for b in bad)}): "
            "name the baseline config by its params, e.g. --baseline options_mode=server_defaults or "
            "--baseline gpu_layers=80,ctx=1024"
        )
    return {k.strip(): v.strip() for k, v in (item.split("=", 1) for item in items)}


def _sync(args: argparse.Namespace) -> int:
    from cfexp.tracking.spool import pending, reachable, spool_root, upload_spool
    from cfexp.tracking.store import MlflowTracker

    mlruns = Path(args.mlruns)
    root = spool_root(mlruns)
    targets = [args.tracking_uri] if args.tracking_uri else sorted(
        {json.loads((root / run_id / "run.json").read_text())["tracking_uri"] for run_id in pending(root)}
    )
    if not targets:
        print(f"nothing to upload: no spooled run in {root}")
        return 0
    code = 0
    for uri in targets:
        if not reachable(uri):
            print(f"cfexp: the tracking server <uri={uri}> cannot be reached: its runs stay in {root}", file=sys.stderr)
            code = 1
            continue
        result = upload_spool(MlflowTracker(uri, mlruns / "artifacts"), root, any_uri=bool(args.tracking_uri))
        print(f"{uri}: uploaded {len(result.uploaded)} run(s), {len(result.busy)} still being written")
        for run_id, why in result.failed.items():
            print(f"cfexp: {run_id} not uploaded: {why}", file=sys.stderr)
            code = 1
    return code


class _Version(argparse.Action):
    """``--version``: the version is looked up only when asked (importlib.metadata is slow to load)."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from cfexp import __version__

        print(f"cfexp {__version__}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cfexp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version, help="print the installed cfexp's version and exit")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start a backend standalone (Ctrl-C stops it)")
    serve.add_argument("backend", choices=["sim", "llamacpp"])
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    serve.add_argument("--port", type=int, default=11434, help="0 picks a free port")
    serve.add_argument("--model-name", default="gemma3:270m", help="the name clients request")
    serve.add_argument("--model-file", default=None, help="llamacpp: a GGUF file (default: embedded Gemma 3 270M)")
    serve.add_argument(
        "--ctx", type=int, default=None, help="context size loaded at start (n_ctx; default: the engine's, 4096)"
    )
    serve.add_argument(
        "--gpu-layers", type=int, default=None,
        help="layers offloaded (n_gpu_layers; default: the engine's: sim all, llamacpp 0)",
    )
    serve.add_argument("--threads", type=int, default=2, help="llamacpp: CPU threads")
    serve.add_argument("--slots", type=int, default=1, help="requests served in parallel; more wait FIFO")
    serve.add_argument("--settings", default=None, help="engine settings as JSON (docs/serving.md)")
    serve.add_argument("--ground-truth", default=None, help="append per-request chunk times to this JSONL file")
    serve.set_defaults(func=_serve)

    ui = commands.add_parser(
        "ui", help="the MLflow UI on cfexp's default store; prints each experiment's runs page (Ctrl-C stops it)"
    )
    ui.add_argument(
        "--mlruns", default="mlruns",
        help="folder of the SQLite store (default: ./mlruns); $MLFLOW_TRACKING_URI overrides it",
    )
    ui.add_argument("--port", type=int, default=5000, help="on 127.0.0.1 (default: 5000)")
    ui.add_argument(
        "--timeout", type=float, default=180.0, help="seconds to wait for the UI to answer (default: 180)"
    )
    ui.set_defaults(func=_ui)

    report = commands.add_parser("report", help="statistics, tables and figures of tracked runs (docs/reports.md)")
    report.add_argument("--experiment", required=True, help="MLflow experiment name (tracking.experiment)")
    report.add_argument("--out", default=None, help="output folder (default: reports/<experiment>)")
    scope = report.add_mutually_exclusive_group()
    scope.add_argument(
        "--sweep", "--parent", dest="sweeps", nargs="+", default=None, metavar="ID",
        help="only these sweeps: their parent run ids (default: the experiment's latest sweep)",
    )
    scope.add_argument(
        "--all", dest="all_runs", action="store_true",
        help="every run of the experiment, all sweeps and single runs (default: the latest sweep)",
    )
    report.add_argument("--filter", default=None, help="MLflow filter string, e.g. \"params.ctx = '512'\"")
    report.add_argument(
        "--tracking-uri", default=None,
        help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlruns/mlflow.db",
    )
    report.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    report.add_argument(
        "--success-metric", default=None, help="metric of the success rate (default: throughput_tok_s)"
    )
    direction = report.add_mutually_exclusive_group()
    direction.add_argument(
        "--higher-is-better", dest="higher_is_better", action="store_const", const=True, default=None,
        help="for --success-metric (default: the metric's direction in docs/metrics.md)",
    )
    direction.add_argument(
        "--lower-is-better", dest="higher_is_better", action="store_const", const=False,
        help="for --success-metric (default: the metric's direction in docs/metrics.md)",
    )
    report.add_argument(
        "--study-storage", default=None,
        help="Optuna storage URL of the studies (default: the one each sweep's parent run names)",
    )
    report.add_argument(
        "--baseline", default=None,
        help="the baseline config as key=value[,key=value] (default: options_mode=server_defaults)",
    )
    report.set_defaults(func=_report)

    sync = commands.add_parser("sync", help="upload runs kept locally while the tracking server was unreachable")
    sync.add_argument("--mlruns", default="mlruns", help="folder holding spool/ (default: ./mlruns)")
    sync.add_argument(
        "--tracking-uri", default=None,
        help="upload every spooled run here (default: each run to the server it was meant for)",
    )
    sync.set_defaults(func=_sync)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except CfexpError as exc:
        print(f"cfexp: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
