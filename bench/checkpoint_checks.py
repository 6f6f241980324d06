"""What resume's checks cost: BLAKE2b over checkpoint tensors and the sampled digest of a large input file.

Usage: python bench/checkpoint_checks.py [--gib 1]   (about 10 s; writes and deletes a 2 GiB temporary file)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's hydrahead

from hydrahead.distill.checkpoint import file_digest, tensor_digests  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=int, default=1, help="GiB of fp32 tensors to checksum")
    args = parser.parse_args()
    torch.set_num_threads(2)
    state = {f"w{i}": torch.randn(1024, 1024) for i in range(256 * args.gib)}
    start = time.perf_counter()
    tensor_digests(state, None)
    seconds = time.perf_counter() - start
    print(f"tensor digests: {1024 * args.gib / seconds:.0f} MiB/s ({seconds / args.gib:.2f} s per GiB)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.bin"
        with open(path, "wb") as f:
            for _ in range(2 * 1024):
                f.write(torch.randn(2**18).numpy().tobytes())  # 1 MiB
        start = time.perf_counter()
        file_digest(path)
        print(f"file digest of a 2 GiB input (sampled): {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
