"""bench/inference.py's op counter (`--sections ops`): what it counts as a kernel and what it does not."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import inference  # noqa: E402


def counted(work) -> int:
    counter = inference.OpCounter()
    with counter, torch.no_grad():
        counter.on = True
        work()
    return counter.count


def test_arithmetic_counts_and_host_only_ops_do_not():
    x = torch.randn(4, 8)
    assert counted(lambda: x + 1) == 1
    assert counted(lambda: x @ x.T) == 1
    assert counted(lambda: x.view(8, 4).t()) == 0  # views
    assert counted(lambda: x.to(torch.float32)) == 0  # its own dtype: the tensor itself
    assert counted(lambda: x.to(torch.float16)) == 1
    # an ATen op on dtypes alone reaches the dispatcher but launches nothing
    assert counted(lambda: torch.promote_types(torch.bfloat16, torch.float32)) == 0


def test_the_ops_compute_dtype_reaches_no_dispatcher():
    from hydrahead.ops.gated_delta import compute_dtype, in_compute_dtype

    x = torch.randn(3)
    calls = []

    class Seen(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            calls.append(func)
            return func(*args, **(kwargs or {}))

    with Seen():
        dtypes = [compute_dtype(d) for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64)]
        same = in_compute_dtype(x)
    assert dtypes == [torch.float32, torch.float32, torch.float32, torch.float64]
    assert same is x and calls == []
