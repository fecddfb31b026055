"""`python -m pretrain [hydra overrides]`: one training process (a launcher starts one per rank)."""

import gc
import sys
from pathlib import Path

import hydra
from omegaconf import OmegaConf

from pretrain.config import register

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
register()


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="pretrain")
def main(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig

    from pretrain import resume
    from pretrain.train import run

    try:
        config = OmegaConf.to_object(cfg)  # the schema's value checks run here
        # resume=<run_dir>: that run's saved config, the command line's overrides on top.
        config = resume.apply(config, list(HydraConfig.get().overrides.task))
    except ValueError as e:  # a bad value, or a change that would break exact continuation
        sys.exit(f"pretrain: {e}")
    from pretrain.checkpoint import UnsafeCheckpointError

    try:
        run(config)
    except (resume.ContinuationError, UnsafeCheckpointError) as e:
        sys.exit(f"pretrain: {e}")
    # The interpreter's last garbage collection walks every object torch and DeepSpeed made
    # (1.6 s of a rank's exit, measured): frozen, they are left to the process's end. Files and
    # process groups are closed by now; exit handlers still run.
    gc.freeze()


if __name__ == "__main__":
    main()
