"""`Log`: the demo's progress lines (the demo pipeline and the teacher's training write through it)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field


@dataclass
class Log:
    """Progress lines with elapsed time on stderr; every step says what it is doing."""

    start: float = field(default_factory=time.time)
    quiet: bool = False

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[{time.time() - self.start:6.0f}s] {message}", file=sys.stderr, flush=True)


def rerun_to_continue(err: Exception) -> str:
    """A stopped distillation's or pretraining's message with the demo's way to go on (rerun the same command)
    in place of theirs (--resume, which `hydrahead demo` has not)."""
    from hydrahead.distill.trainer import RESUME_ADVICE

    return f"{str(err).removesuffix(RESUME_ADVICE).rstrip()} Rerun the same hydrahead demo command to continue."
