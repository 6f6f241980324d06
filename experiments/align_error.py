"""Where a student's align error lies: per layer (the align loss's normalised terms), and at chosen layers the
share of the squared error held by the top positions and residual features. The student is the teacher freshly
converted by the plan, or (`--student`) a trained hybrid checkpoint. With neither, the teacher alone: does it
have an attention sink, a massive activation at a sequence's first position that would set the align loss's
terms alone (`stages.align.sink_tokens`)? Per layer, the share of the teacher's per-feature-centred sum of
squares at position 0 (1/T where nothing stands out) and its norm there over the median.

Usage: python experiments/align_error.py --teacher smollm2/ --plan plans/kvgroup-7to1.json --data data/train.jsonl
       python experiments/align_error.py --teacher smollm2/ --student runs/kvgroup-7to1-long/final --data ...
       python experiments/align_error.py --teacher smollm2/ --data data/train.jsonl     # the teacher's sink
       python experiments/align_error.py --teacher demo     # the shipped teacher, documents like the demo's
(docs/real_models.md section 7: SmolLM2's error at layer 15 is 98.5% one massive-activation feature)
"""

from __future__ import annotations

import argparse
import copy
import json

import torch


def main() -> None:
    from hydrahead import HeadPlan, HybridOptions, convert, load_model, load_tokenizer
    from hydrahead.distill.losses import hidden_state_loss

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True, help="a checkpoint, or 'demo' (the shipped teacher)")
    p.add_argument("--plan", help="the plan to convert the teacher by (without --student)")
    p.add_argument("--student", help="a trained hybrid checkpoint instead of a fresh conversion")
    p.add_argument("--data", help="JSONL with a text field: its first documents, concatenated (with --teacher demo: "
                                  "default, documents of the demo's generator)")
    p.add_argument("--length", type=int, default=None, help="tokens in the row (default 512; the shipped teacher's "
                                                            "training length with --teacher demo)")
    p.add_argument("--preset", default="exact")
    p.add_argument("--layers", default="5,15,-1", help="layers whose error is broken down")
    args = p.parse_args()
    torch.manual_seed(0)
    if args.teacher == "demo":
        from hydrahead.demo.teacher import load_teacher
        from hydrahead.demo.teacher_recipe import load_recipe

        teacher, tok = load_teacher()
        args.length = args.length or load_recipe().seq_len
    else:
        teacher, tok = load_model(args.teacher, "float32"), load_tokenizer(args.teacher)
        args.length = args.length or 512
    if args.data:
        texts = [json.loads(line)["text"] for line in open(args.data)][:64]
    elif args.teacher == "demo":
        texts = demo_documents(tok, args.length)
    else:
        p.error("give --data (a JSONL with a text field)")
    ids = torch.tensor([sum((tok(t)["input_ids"] for t in texts), [])[:args.length]])  # (1, T)
    if not (args.student or args.plan):
        print("the teacher alone (give --plan or --student for a student's error)")
        return teacher_sink(teacher, ids)
    if args.student:
        student = load_model(args.student, "float32")
    elif args.plan:
        student = convert(copy.deepcopy(teacher), HeadPlan.from_json(args.plan), HybridOptions.preset(args.preset),
                          calibration=ids)
    with torch.no_grad():
        want = teacher.model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states[1:]
        got = student.model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states[1:]
    _, nmse = hidden_state_loss(got, want)
    print("nmse per layer:", " ".join(f"{x:.3g}" for x in nmse.tolist()))
    rest = torch.ones(ids.shape, dtype=torch.bool)
    rest[:, 0] = False  # the first position: where the teacher's massive activation (the attention sink) lies
    _, nmse_rest = hidden_state_loss(got, want, positions=rest)
    print("nmse per layer, position 0 left out:", " ".join(f"{x:.3g}" for x in nmse_rest.tolist()))
    for layer in (int(x) % len(want) for x in args.layers.split(",")):
        err = (got[layer] - want[layer])[0].pow(2)  # (T, d)
        by_position, by_feature = err.sum(-1), err.sum(0)
        pos, feat = by_position.topk(3), by_feature.topk(3)
        norms = want[layer][0].norm(dim=-1)  # (T,)
        print(f"layer {layer}: top positions {pos.indices.tolist()} hold "
              f"{[round(x, 3) for x in (pos.values / by_position.sum()).tolist()]} of the error, top features "
              f"{feat.indices.tolist()} {[round(x, 3) for x in (feat.values / by_feature.sum()).tolist()]}; "
              f"teacher |h| at position 0 {norms[0]:.0f}, median {norms.median():.0f}")


def teacher_sink(teacher, ids: torch.Tensor) -> None:
    """What the align stage's sink warning measures (`AlignStage.warn_of_sink`), per layer, one row."""
    from hydrahead.distill.losses import position_share

    with torch.no_grad():
        hidden = teacher.model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states[1:]
    print(f"per layer: the share of the teacher's centred sum of squares at position 0 (1/T = {1 / ids.shape[1]:.4f}), "
          "and its norm there over the median")
    real = torch.ones(ids.shape, dtype=torch.bool)
    first = torch.zeros_like(real)
    first[:, 0] = True
    for layer, h in enumerate(hidden):
        norms = h[0].float().norm(dim=-1)
        print(f"layer {layer}: {position_share(h, real, first):.4f}, {norms[0] / norms.median():.1f}x")


def demo_documents(tokenizer, length: int) -> list[str]:
    """Documents of the demo's distillation generator (hydrahead/demo/pipeline.py build_corpus): its four kinds,
    60 documents of a seed of their own, shuffled."""
    import random

    from hydrahead.demo.corpus import code_split
    from hydrahead.demo.teacher_data import teacher_documents
    from hydrahead.demo.teacher_recipe import load_recipe

    code, _ = code_split(load_recipe().corpus.code_bytes)
    docs = teacher_documents(tokenizer, code, counts={"niah": 20, "multiquery": 20, "repeat": 10, "code": 10},
                             niah_tasks=("single_number", "single_word", "multikey"), max_tokens=length, seed=123)
    random.Random(0).shuffle(docs)
    return docs


if __name__ == "__main__":
    main()
