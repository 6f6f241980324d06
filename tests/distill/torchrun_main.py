"""Entry point for the distributed test: `torchrun ... torchrun_main.py recipe.yaml [recipe.yaml ...]`.

Joins the process group once and runs `hydrahead distill` on each recipe in turn (run() leaves a group it
did not create alone), so one torchrun start-up serves several recipes.
"""

import sys

import torch.distributed as dist

from hydrahead.cli import main

if __name__ == "__main__":
    dist.init_process_group("gloo")
    try:
        for recipe in sys.argv[1:]:
            if main(["distill", recipe]) != 0:
                sys.exit(1)
    finally:
        dist.destroy_process_group()
