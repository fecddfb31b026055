"""Turn a composed training config into processes on machines: local, torchrun (one agent per
node), a DeepSpeed hostfile, a Slurm sbatch script, or Ray Train on a Ray cluster."""
