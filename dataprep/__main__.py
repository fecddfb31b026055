"""`python -m dataprep [hydra overrides]`: the corpus job on local Ray or RAY_ADDRESS."""

import gc
import sys
from pathlib import Path

import hydra
from omegaconf import OmegaConf

from dataprep.config import DataprepConfig, register
from dataprep.tasks import console_logging

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
register()


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="dataprep")
def main(cfg) -> None:
    console_logging()
    from dataprep.pipeline import run

    config: DataprepConfig = OmegaConf.to_object(cfg)
    if config.ray.submit_job:
        from hydra.core.hydra_config import HydraConfig

        from dataprep.ray_job import submit

        sys.exit(submit("dataprep", list(HydraConfig.get().overrides.task), config.ray.address))
    run(config)
    gc.freeze()  # the interpreter's last collection would walk every object the job made, for nothing


if __name__ == "__main__":
    main()
