"""fla's Triton kernels on the CPU, in Triton's interpreter: a hybrid's CUDA path (the GDN branch calling fla
with the L2 norm, gate and beta inside the kernels, and fla's short conv) run and counted without a GPU. For
checks only: fp32 (the interpreter's bf16 dot products are wrong, not fla's), seconds per kernel call.

    from hydrahead.ops.gated_delta.interpret import interpret_fla_on_cpu
    interpret_fla_on_cpu()          # in a process started with TRITON_INTERPRET=1; needs triton and fla-core
    model(ids)                      # a CPU model's GDN branches now take fla's path (`fla_applies`)

Used by tests/ops/test_fla_interpreted.py (the CUDA path against the PyTorch path) and by
`bench/inference.py --sections ops --fla-interpreted` (kernels per layer as the CUDA path launches them).
"""

from __future__ import annotations

import builtins
import os
import sys

from hydrahead.errors import FlaNotInstalledError
from hydrahead.ops.gated_delta import fla


def interpret_fla_on_cpu() -> None:
    """Run fla's kernels on CPU tensors from here on, through Triton's interpreter, and let the hybrid's GDN
    branches dispatch CPU tensors to them. Raises FlaNotInstalledError without triton or fla-core, and
    RuntimeError if triton was imported without the interpreter: Triton reads TRITON_INTERPRET when a
    kernel is decorated, its own library's at its import, and `import torch._dynamo` (so `import hydrahead`)
    imports triton wherever it is installed; so the variable must be set when the process starts."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        if "triton" in sys.modules:
            raise RuntimeError("fla's kernels on the CPU need Triton's interpreter, chosen when triton is first "
                               "imported (torch imports it): start Python with TRITON_INTERPRET=1 in the environment")
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        import numpy as np
        import triton.runtime.autotuner as autotuner
        import triton.runtime.interpreter as interpreter
    except ImportError as err:
        raise FlaNotInstalledError(f"Triton's interpreter needs triton ({err}): pip install triton") from err
    fla.load_fla_kernels()  # every module whose kernels the hybrid runs (or FlaNotInstalledError)
    fla.load_fla_conv()

    # Four gaps of the interpreter (the fourth further down). Its autotuner times configs through a GPU driver
    # (none here): report equal times, so the first config runs. A kernel's `for i in range(n)` gives Python
    # ints where compiled Triton gives tensors, and fla calls `i.to(tl.int64)` (closed for fla's modules only).
    # A mask made from a Python comparison and a block mask (`(t < T) & m`, in fla's conv backward from an
    # initial state) comes out int32, which its loads and stores refuse: compiled Triton reads a mask as true
    # where nonzero.
    autotuner.Autotuner.do_bench = lambda self, fn, quantiles=None: [1.0, 1.0, 1.0]
    builder = interpreter.InterpreterBuilder
    if not getattr(builder, "masks_as_bool", False):
        load, store = builder.create_masked_load, builder.create_masked_store

        def as_bool(mask):
            if mask.data.dtype == np.bool_:
                return mask
            return interpreter.TensorHandle(mask.data.astype(np.bool_), interpreter.tl.int1)

        def masked_load(self, ptrs, mask, other, *args):
            return load(self, ptrs, as_bool(mask), other, *args)

        def masked_store(self, ptrs, value, mask, *args):
            return store(self, ptrs, value, as_bool(mask), *args)

        builder.create_masked_load, builder.create_masked_store = masked_load, masked_store
        builder.masks_as_bool = True

    # Triton before 3.9 reads a scalar's index as int() of a one-element array, which numpy >= 2.4 refuses
    # (torch 2.11's triton 3.6 with a current numpy); 3.9 squeezes it first, as here.
    patch_tensor = getattr(interpreter, "_patch_lang_tensor", None)
    if patch_tensor is not None and not getattr(patch_tensor, "squeezes_index", False):
        def patch_lang_tensor(tensor, scope):
            patch_tensor(tensor, scope)
            scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

        patch_lang_tensor.squeezes_index = True
        interpreter._patch_lang_tensor = patch_lang_tensor

    class Index(int):
        def to(self, *args, **kwargs):
            return self

    def kernel_range(*args):
        return [Index(i) for i in builtins.range(*args)]

    for name, module in list(sys.modules.items()):
        if name.startswith("fla.") and module is not None:
            module.range = kernel_range
    fla.CPU_INTERPRETED = True
