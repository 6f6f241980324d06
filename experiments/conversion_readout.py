"""Does a least-squares readout of each GDN head, fitted at conversion, start a student nearer its teacher than
the mean output alone (`HybridOptions.gdn_mean_output`)?

For every GDN head h of a converted student: the teacher's layer input (one teacher forward over the
calibration rows) goes through the student's attention, and the GDN branch's output for h (what enters
o_proj, after the fusion norm where there is one) is regressed on the teacher head's output: Y ~ X A + c,
ridge `--ridge` times the mean diagonal of X^T X. The fit folds into o_proj: its columns of h become
W_h A^T and its bias gains W_h (c - mu_h) (mu_h: the mean output the bias already holds). Variants:
`full` (A: D x D), `scalar` (A = a I), `centre` (A = I, c = mu - mean(X): the branch's own mean taken out).
Reported as in experiments/conversion_mean.py: cross-entropy and the residual stream's normalised error
on disjoint evaluation rows.

Text, offline: Python's standard library (calibration: textwrap.py, LICENSE.txt from 0, and with --rows 4
also difflib.py, inspect.py; evaluation: argparse.py and LICENSE.txt from token 2000).

Usage: python experiments/conversion_readout.py --teacher smollm2/ --plan plans/kvgroup-7to1.json [--rows 4]
(the plan of experiments/conversion_mean.py; docs/real_models.md section 7)
"""

from __future__ import annotations

import argparse
import copy

import torch
from conversion_mean import Comparison, evaluation_rows, gdn_branch_outputs, stdlib_ids  # this folder is on sys.path when run as a script


def main() -> None:
    from hydrahead import HeadPlan, HybridOptions, convert, load_model, load_tokenizer
    from hydrahead.models.convert import teacher_head_statistics
    from hydrahead.models.heads import HeadHooks

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True)
    p.add_argument("--plan", required=True)
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--rows", type=int, default=2, choices=(2, 4))
    p.add_argument("--ridge", type=float, default=1e-3)
    p.add_argument("--presets", default="exact,paper")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    teacher, tok = load_model(args.teacher, "float32").eval(), load_tokenizer(args.teacher)
    plan = HeadPlan.from_json(args.plan).validate(teacher.config)
    T = args.length
    names = ["textwrap.py", "LICENSE.txt", "difflib.py", "inspect.py"][: args.rows]
    calibration = torch.tensor([stdlib_ids(tok, n, 0, T) for n in names])
    compare = Comparison(teacher, evaluation_rows(tok, T))
    layers = len(compare.reference)

    # the teacher's attention inputs and per-head outputs on the calibration rows
    inputs, handles = {}, []
    for i, layer in enumerate(teacher.model.layers):
        def keep(module, a, kw, i=i):
            inputs[i] = kw
        handles.append(layer.self_attn.register_forward_pre_hook(keep, with_kwargs=True))
    with HeadHooks(teacher) as hooks:
        hooks.capture = {}
        teacher(input_ids=calibration, use_cache=False)
        head_out = {i: hooks.capture[i].float() for i in range(layers)}  # (B, T, H, D)
    for h in handles:
        h.remove()
    mean = teacher_head_statistics(teacher, calibration).mean

    print(f"teacher {args.teacher}, plan {args.plan} ({sum(map(len, plan.fa_heads))} FA heads), {T}-token rows, "
          f"{args.rows} calibration rows, ridge {args.ridge}; cross-entropy of the teacher itself {compare.ce_teacher:.2f}\n")
    compare.header()
    for preset in args.presets.split(","):
        base = convert(copy.deepcopy(teacher), plan, HybridOptions.preset(preset), calibration=calibration).eval()
        compare.row(f"{preset}, mean output (the library)", *compare.measure(base))
        branch = gdn_outputs(base, inputs)
        for variant in ("centre", "scalar", "full"):
            student = copy.deepcopy(base)
            fit = fold(student, branch, head_out, mean, variant, args.ridge)
            compare.row(f"{preset}, mean output + {variant} readout (calibration R^2 {fit:.3f})", *compare.measure(student))
        student = copy.deepcopy(base)
        fit = fold_sequential(student, calibration, head_out, mean, args.ridge)
        compare.row(f"{preset}, mean output + full readout fitted layer by layer on the student's own stream "
                    f"(calibration R^2, mean over layers, {fit:.3f})", *compare.measure(student))


def gdn_outputs(student, inputs) -> dict[int, torch.Tensor]:
    """Per layer with GDN heads: what the GDN heads hand o_proj, (N, H_gdn, D), on the teacher's layer inputs."""
    def run():
        for i, layer in enumerate(student.model.layers):
            if layer.self_attn.gdn is not None:
                layer.self_attn(**{k: v for k, v in inputs[i].items() if k != "past_key_values"})

    return {i: heads.flatten(0, 1) for i, heads in gdn_branch_outputs(student, run).items()}


def fold_sequential(student, calibration, head_out, mean, ridge: float) -> float:
    """`fold`'s full readout, one layer at a time from the first, each fitted on the GDN outputs the student
    computes on its own residual stream with the layers before it already fitted. Returns the mean of the
    layers' calibration R^2 (`fold` pools its heads)."""
    fits = []
    for i, layer in enumerate(student.model.layers):
        if layer.self_attn.gdn is None:
            continue
        run = lambda: student.model(input_ids=calibration, use_cache=False)  # noqa: E731 (no lm head needed)
        heads = gdn_branch_outputs(student, run, layers={i})[i]
        fits.append(fold(student, {i: heads.flatten(0, 1)}, head_out, mean, "full", ridge))
    return sum(fits) / len(fits)


def fold(student, branch, head_out, mean, variant: str, ridge: float) -> float:
    """Fit each GDN head's readout and fold it into o_proj; the calibration R^2 over all GDN heads."""
    residual = total = 0.0
    for i, X in branch.items():
        attention = student.model.layers[i].self_attn
        D, fa = attention.head_dim, len(attention.fa_heads)
        W, bias = attention.o_proj.weight, attention.o_proj.bias
        for j, h in enumerate(attention.gdn_heads):
            x, y, mu = X[:, j], head_out[i][:, :, h].flatten(0, 1), mean[i, h]
            xm, ym = x.mean(0), y.mean(0)
            xc, yc = x - xm, y - ym
            if variant == "centre":
                A = torch.eye(D)
            elif variant == "scalar":
                a = (xc * yc).sum() / ((xc * xc).sum() * (1 + ridge))
                A = a * torch.eye(D)
            else:
                gram = xc.T @ xc
                gram = gram + ridge * gram.diagonal().mean() * torch.eye(D)
                A = torch.linalg.solve(gram, xc.T @ yc)  # (D, D): y ~ x A
            c = ym - xm @ A
            residual += (yc - xc @ A).pow(2).sum().item()
            total += yc.pow(2).sum().item()
            cols = slice((fa + j) * D, (fa + j + 1) * D)
            Wh = W[:, cols].clone()
            W[:, cols] = Wh @ A.T
            bias.add_(Wh @ (c - mu))
    return 1 - residual / total


if __name__ == "__main__":
    main()
