"""``python -m cfexp``: compose an experiment with Hydra and run it.

    python -m cfexp                                  # the default experiment
    python -m cfexp -m temperature=0.6,0.8 ctx=512,1024
    python -m cfexp backend=sim scenario=single_inference

Exit status: 0 when every job finished, 1 when any failed, 2 when every job
was rejected as an invalid config.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cfexp.config.schema import register_configs
from cfexp.servers.process import install_cleanup_handlers

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _hydra_entry(cfg: DictConfig) -> dict[str, float] | None:
    from cfexp.app.task import run_job  # after Hydra parsed the command line: --help stays fast

    return run_job(cfg)


def main() -> None:
    register_configs()
    install_cleanup_handlers()
    _hydra_entry()
    from cfexp.app.callback import Outcome

    sys.exit(Outcome.exit_code)


if __name__ == "__main__":
    main()
