"""`python -m pretrain [hydra overrides]`: one training process (a launcher starts one per rank)."""

from pathlib import Path

import hydra
from omegaconf import OmegaConf

from pretrain.config import PretrainConfig, register

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
register()


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="pretrain")
def main(cfg) -> None:
    from pretrain.train import run

    run(OmegaConf.to_object(cfg))


if __name__ == "__main__":
    main()
