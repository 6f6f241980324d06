"""lm-evaluation-harness integration (needs the `eval` extra: `pip install hydrahead[eval]`).

A hybrid checkpoint is a normal transformers directory that carries its modeling code, so the plain command
works with remote code allowed: `lm_eval --model hf --model_args pretrained=hybrid/,trust_remote_code=True`.
This module is lm_eval's command line with hydrahead imported, for runs without remote code (and checkpoints
saved without the code), with lm_eval's own arguments:

    python -m hydrahead.eval.lm_harness --model hf --model_args pretrained=hybrid/ --tasks hellaswag
    python -m hydrahead.eval.lm_harness --model hydrahead --model_args pretrained=hybrid/ --tasks hellaswag

From Python, importing hydrahead is enough:

    import hydrahead, lm_eval
    lm_eval.simple_evaluate(model="hf", model_args="pretrained=hybrid/", tasks=["hellaswag"])

`--model hydrahead` (registered when this module is imported) is lm_eval's `hf` model with the decoder-only
backend set, since lm_eval cannot tell that from the hybrid's model_type (it warns and then guesses right).
Nothing here needs trust_remote_code: the model classes come from the installed hydrahead package.
"""

from __future__ import annotations

import sys

import hydrahead.models.hybrid  # noqa: F401  (registers the hybrid model types with transformers' Auto classes)
from lm_eval.api.registry import model_registry
from lm_eval.models.huggingface import HFLM

# Registered by import path, not by class: run as `python -m`, this file is imported twice (as __main__ and
# under its own name), and the registry accepts the same path twice but not two different classes.
model_registry.register("hydrahead", target="hydrahead.eval.lm_harness:HydraHeadLM")


class HydraHeadLM(HFLM):
    """lm_eval's Hugging Face model for hydrahead checkpoints (and plain ones): the causal backend, always."""

    def __init__(self, pretrained, backend: str = "causal", **kwargs) -> None:
        super().__init__(pretrained=pretrained, backend=backend, **kwargs)


def main(argv: list[str] | None = None) -> None:
    """lm_eval's command line, with hydrahead imported."""
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm-eval", *(sys.argv[1:] if argv is None else argv)]
    cli_evaluate()


if __name__ == "__main__":
    main()
