"""How far a freshly converted student starts from its teacher, with and without the GDN heads' mean output
(`HybridOptions.gdn_mean_output`), and with the heads' statistics taken on text or on random tokens.

Text, offline everywhere: Python's own standard library (its LICENSE.txt, English prose, and two modules'
source). The calibration batch and the evaluation batch are disjoint: calibration = textwrap.py and the
first part of LICENSE.txt, evaluation = argparse.py and a later part of LICENSE.txt (from token 2000; 2 rows of --length).
Reported per model: next-token cross-entropy on the evaluation rows, and the normalised error of the
residual stream against the teacher's (MSE over the teacher's variance) at three depths. Reference rows:
the teacher with its GDN-to-be heads mean-ablated (each writes its calibration mean at every position) and
zero-ablated, through the one head hook (`HeadHooks.overwrites`). One variant the library does not make:
the bias less the converted GDN branch's own mean output (each GDN head then starts with exactly the
teacher head's mean).

Usage: python experiments/conversion_mean.py --teacher smollm2/ --plan plans/kvgroup-7to1.json
(docs/real_models.md section 7 and docs/method.md section 2 cite it; the plan there is the scored kv_group 7:1
plan of docs/real_models.md section 6, `hydrahead plan --scores attr.json --ratio 7:1 --granularity kv_group
--min-per-layer 0`: rerun from fresh attribution scores on 2026-12-05, it gives section 7's table to the digit)
"""

from __future__ import annotations

import argparse
import copy
import sysconfig
from pathlib import Path

import torch
import torch.nn.functional as F


def main() -> None:
    from hydrahead import HeadPlan, HybridOptions, convert, load_model, load_tokenizer
    from hydrahead.models.convert import teacher_head_statistics

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True)
    p.add_argument("--plan", required=True)
    p.add_argument("--length", type=int, default=512)
    args = p.parse_args()
    torch.set_grad_enabled(False)
    teacher, tok = load_model(args.teacher, "float32").eval(), load_tokenizer(args.teacher)
    plan = HeadPlan.from_json(args.plan).validate(teacher.config)
    T = args.length
    calibrations = {
        "text": torch.tensor([stdlib_ids(tok, "textwrap.py", 0, T), stdlib_ids(tok, "LICENSE.txt", 0, T)]),
        "random tokens": torch.randint(0, teacher.config.vocab_size, (2, T), generator=torch.Generator().manual_seed(0)),
    }
    compare = Comparison(teacher, evaluation_rows(tok, T))
    measure, row = compare.measure, compare.row
    print(f"teacher {args.teacher}, plan {args.plan} ({sum(map(len, plan.fa_heads))} FA heads), "
          f"{T}-token rows; cross-entropy of the teacher itself {compare.ce_teacher:.2f}\n")
    compare.header()
    H = teacher.config.num_attention_heads
    gdn = {i: [h for h in range(H) if h not in heads] for i, heads in enumerate(plan.fa_heads)}
    for calibration_name, calibration in calibrations.items():
        mean = teacher_head_statistics(teacher, calibration).mean

        def ablate(values):
            return lambda hooks: hooks.overwrites.update({i: (h, values(i, h)) for i, h in gdn.items() if h})

        if calibration_name == "text":
            row("teacher, those heads zeroed", *measure(teacher, ablate(lambda i, h: torch.zeros(len(h), mean.shape[-1]))))
        row(f"teacher, those heads mean-ablated ({calibration_name})", *measure(teacher, ablate(lambda i, h: mean[i, h])))
        for preset in ("exact", "paper"):
            for on in (False, True):
                options = HybridOptions.preset(preset, gdn_mean_output=on)
                student = convert(copy.deepcopy(teacher), plan, options, calibration=calibration).eval()
                name = f"student, {preset}, {'with' if on else 'without'} the mean output ({calibration_name})"
                row(name, *measure(student))
            if calibration_name == "text":  # a variant the library does not make (yet)
                take_out_branch_mean(student, calibration)
                row(f"student, {preset}, with the mean output less the GDN branch's own mean (text)", *measure(student))


def stdlib_ids(tok, name: str, start: int, T: int) -> list[int]:
    """T token ids of a file of Python's standard library, from token `start` on."""
    tokens = tok((Path(sysconfig.get_paths()["stdlib"]) / name).read_text())["input_ids"][start : start + T]
    assert len(tokens) == T, f"{name} holds fewer than {start + T} tokens"
    return tokens


def evaluation_rows(tok, T: int) -> torch.Tensor:
    """The evaluation batch (2, T), disjoint from every calibration batch here."""
    return torch.tensor([stdlib_ids(tok, "argparse.py", 2000, T), stdlib_ids(tok, "LICENSE.txt", 2000, T)])


class Comparison:
    """A model against the teacher on the evaluation rows: cross-entropy, and the residual stream's MSE over the
    teacher's variance at three depths, printed as a markdown table row."""

    def __init__(self, teacher, evaluation: torch.Tensor) -> None:
        self.teacher, self.evaluation = teacher, evaluation
        self.ce_teacher, self.reference = self.measure(teacher)
        layers = len(self.reference)
        self.depths = (layers // 6, layers // 2, layers - 1)

    def measure(self, model, hooks_setup=None):
        from hydrahead.models.heads import HeadHooks

        with HeadHooks(self.teacher) as hooks:
            if hooks_setup is not None:
                hooks_setup(hooks)
            out = model(input_ids=self.evaluation, output_hidden_states=True, use_cache=False)
        logits, ids = out.logits[:, :-1].flatten(0, 1), self.evaluation[:, 1:].flatten()
        return F.cross_entropy(logits, ids).item(), out.hidden_states[1:]

    def header(self) -> None:
        print("| model | cross-entropy | " + " | ".join(f"error, layer {i}" for i in self.depths) + " |")
        print("|---|---:|" + "---:|" * len(self.depths))

    def row(self, name: str, ce: float, hidden) -> None:
        reference = self.reference
        errors = [((hidden[i] - reference[i]).pow(2).mean() / reference[i].var()).item() for i in self.depths]
        print(f"| {name} | {ce:.2f} | " + " | ".join(f"{e:.3g}" for e in errors) + " |", flush=True)


def take_out_branch_mean(student, calibration: torch.Tensor) -> None:
    """Subtract, through o_proj, the converted GDN branch's own mean output on the calibration batch from the
    mean-output bias, so that each GDN head's output starts with the teacher head's mean exactly."""
    outputs = gdn_branch_outputs(student, lambda: student(input_ids=calibration, use_cache=False))
    for i, heads in outputs.items():
        attention = student.model.layers[i].self_attn
        mean = heads.mean(dim=(0, 1)).reshape(-1)
        attention.o_proj.bias.sub_(attention.o_proj.weight[:, len(attention.fa_heads) * attention.head_dim :] @ mean)


def gdn_branch_outputs(student, run, layers=None) -> dict[int, torch.Tensor]:
    """What each layer's GDN heads hand o_proj (the columns of its input after the FA heads'), (B, T, H_gdn, D)
    in fp32, captured while `run()` runs the student; `layers`: only these layers."""
    out, handles = {}, []
    for i, layer in enumerate(student.model.layers):
        attention = layer.self_attn
        if attention.gdn is None or (layers is not None and i not in layers):
            continue

        def hook(module, args, i=i, attention=attention):
            out[i] = args[0].unflatten(-1, (-1, attention.head_dim))[..., len(attention.fa_heads) :, :].float()

        handles.append(attention.o_proj.register_forward_pre_hook(hook))
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return out


if __name__ == "__main__":
    main()
