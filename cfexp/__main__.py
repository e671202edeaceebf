"""``python -m cfexp``: compose an experiment with Hydra and run it.

    python -m cfexp                                  # the default experiment
    python -m cfexp -m temperature=0.6,0.8 ctx=512,1024
    python -m cfexp backend=sim scenario=single_inference

Exit status: 0 when every job finished, 1 when any failed, 2 when the config
could not be composed (an unknown key, a word not allowed, a wrong type: Hydra
prints which), every job was rejected as an invalid config, or an output
folder cannot be written,
130 after Ctrl-C (SIGINT) and 143 after SIGTERM: the running job's run is then
KILLED, the sweep's parent run too, and every server and agent is stopped.
"""

from __future__ import annotations

import sys

from cfexp.tracking import writer as tracking_writer

if __name__ == "__main__":
    # First, before Hydra is imported: the tracking writer process imports MLflow (~1.2 s of
    # one core) on the other core while this one imports Hydra and composes the sweep.
    tracking_writer.start_at_launch(sys.argv[1:])

import gc
import signal

import hydra
from omegaconf import DictConfig

from cfexp.backends.process import stop_all
from cfexp.config.schema import register_configs
from cfexp.locations import conf_dir
from cfexp.signals import Terminated, install_cleanup_handlers, stop_launched_jobs

# The checkout's top-level conf/, or the copy a wheel carries inside the package (cfexp.locations).
CONF_DIR = str(conf_dir())


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _hydra_entry(cfg: DictConfig) -> dict[str, float] | None:
    from cfexp.app.task import run_job  # after Hydra parsed the command line: --help stays fast

    return run_job(cfg)


def main() -> None:
    if not (conf_dir() / "config.yaml").is_file():
        print(
            f"cfexp: Hydra's config tree is missing <conf_dir={CONF_DIR}>: this cfexp was installed "
            "without it. Reinstall from the source folder or its wheel (`pip install .`), which ship conf/.",
            file=sys.stderr,
        )
        sys.exit(2)
    register_configs()
    install_cleanup_handlers()
    try:
        _run()
    finally:
        # Every object made so far lives until the process ends: the interpreter's last
        # collections need not walk them (with MLflow and Hydra loaded, ~0.8 s of the exit
        # on 2 cores). Exit handlers still run (servers and agents are stopped, logs flushed).
        gc.freeze()


def _run() -> None:
    try:
        _hydra_entry()
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
        sys.exit(_interrupted(exc))
    except ValueError as exc:
        from cfexp.app.callback import Outcome

        if Outcome.started:
            raise
        # Hydra's own check of the command line (e.g. -m with --cfg), before anything ran.
        print(f"cfexp: {exc}. See python -m cfexp --help.", file=sys.stderr)
        sys.exit(2)
    except SystemExit as exc:
        from cfexp.app.callback import Outcome

        if exc.code == 1 and not Outcome.started:
            # Hydra printed why it could not compose the config; no run started.
            from cfexp.config.keys import hints_for

            for hint in hints_for(sys.argv[1:]):
                print(f"cfexp: {hint}", file=sys.stderr)
            sys.exit(2)
        # Hydra reports an error it caught (e.g. a launcher's: a job whose process
        # died) by exiting 1, without the sweep's end hook: close the sweep here.
        if exc.code not in (0, None):
            stop_all()
            stop_launched_jobs(signal.SIGINT, grace_s=None)  # the jobs still running end as usual
            _close_sweep("the sweep stopped on an error (see above)", "FAILED")
        raise
    from cfexp.app.callback import Outcome

    sys.exit(Outcome.exit_code)


def _interrupted(exc: KeyboardInterrupt) -> int:
    """Stop every child, close the sweep's parent run KILLED; the exit status."""
    signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
    # A second signal during this clean-up must not cut it short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop_all()
    stop_launched_jobs(signum)
    reason = str(exc) or "interrupted by the user (Ctrl-C)"
    _close_sweep(reason, "KILLED")
    print(f"cfexp: {reason}; any running job was marked KILLED and every server and agent stopped.",
          file=sys.stderr)
    return 128 + signum


def _close_sweep(reason: str, run_status: str) -> None:
    try:
        from cfexp.app.callback import close_unfinished

        close_unfinished(reason, run_status)
    except Exception as error:  # the store may be what broke: still exit cleanly
        print(f"cfexp: could not close the sweep's parent run: {error}", file=sys.stderr)


if __name__ == "__main__":
    main()
