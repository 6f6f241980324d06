"""A real mechanism: a tiny model trained on key-value recall, scored, then checked by ablation.

Training is deterministic (seed 0, one thread). In this model the recall is carried by two heads of
layer 0 (the copy is split between them): the top-2 set is what must break recall. Other seeds spread
recall over more heads (e.g. seed 2: no pair of heads breaks it), which is a property of the model,
not of the ranking.
"""

import dataclasses

import numpy as np
import pytest
import torch

from hydrahead import HeadPlan
from hydrahead.scoring import (ScoringError, ablate, build_probes, layer_similarity, score_heads,
                               teacher_forced_accuracy, validate_scores)
from hydrahead.scoring.readout import logit_margin
from tests.scoring.kv_model import KV_CONFIG, train_kv_model



@pytest.fixture(scope="module")
def kv():
    model, tokenizer, steps, accuracy = train_kv_model()
    assert accuracy >= 0.9, f"the recall model did not train ({accuracy:.2f} after {steps} steps)"
    return model, tokenizer


@pytest.fixture(scope="module")
def trained(kv):
    model, tokenizer = kv
    score_probes = build_probes(tokenizer, KV_CONFIG, seed=1, samples=8)
    test_probes = build_probes(tokenizer, KV_CONFIG, seed=2, samples=32)  # held out from scoring
    scores = {m: score_heads(model, probes=score_probes, method=m) for m in ("patching", "attribution", "retrieval")}
    return model, test_probes, scores


def test_model_solves_recall(trained):
    model, probes, _ = trained
    assert teacher_forced_accuracy(model, probes) >= 0.9


@pytest.mark.parametrize("method", ["patching", "attribution", "retrieval"])
def test_scores_say_how_many_probes_the_unpatched_model_solves(kv, method):
    """The clean runs' accuracy, recorded while scoring, is validate's teacher-forced accuracy of the plain model;
    half of the probes here ask for the distractor (which this model does not answer)."""
    model, tokenizer = kv
    probes = build_probes(tokenizer, KV_CONFIG, seed=3, samples=4)
    probes[::2] = [dataclasses.replace(p, answer=p.distractor, distractor=p.answer) for p in probes[::2]]
    expected = teacher_forced_accuracy(model, probes)
    assert 0 < expected < 1
    assert score_heads(model, probes=probes, method=method).metadata["clean_accuracy"] == pytest.approx(expected)


@torch.no_grad()
def mean_margin(model, probes, heads=()):
    """Mean readout m over the probes with `heads` mean-ablated."""
    ids = torch.tensor([p.clean_ids for p in probes])  # all the same length
    with ablate(model, heads, reference=probes):
        logits = model(input_ids=ids).logits[:, -1:]  # (B, 1, V): one answer token
    return float(np.mean([logit_margin(logits[i:i + 1], torch.tensor(p.answer), torch.tensor(p.distractor)).item()
                          for i, p in enumerate(probes)]))


def test_patching_top_heads_are_the_ones_recall_needs(trained):
    model, probes, scores = trained
    patching = scores["patching"]
    top1, top2 = patching.top_k(2)
    others = [(l, h) for l in range(2) for h in range(4) if (l, h) not in (top1, top2)]
    # the top-ranked head on its own costs more of the answer's logit margin than any head outside the top 2
    base = mean_margin(model, probes)
    drop = {head: base - mean_margin(model, probes, [head]) for head in [top1, *others]}
    assert drop[top1] > 0.2 and drop[top1] > 2 * max(drop[h] for h in others), drop
    report = validate_scores(model, probes, patching, top_k=2, seeds=(0, 1, 2, 3))
    assert report.accuracy >= 0.9
    assert report.accuracy_top <= 0.5, report.table()  # top-2 ablated: recall breaks
    assert report.accuracy_random_mean >= 0.8, report.table()  # 2 random other heads: it does not
    assert all(set(map(tuple, r)).isdisjoint({top1, top2}) for r in report.random_heads)


def test_methods_agree_on_this_model(trained):
    model, probes, scores = trained
    report = validate_scores(model, probes, scores["patching"], top_k=2, seeds=(0,),
                             compare={"attribution": scores["attribution"], "retrieval": scores["retrieval"]})
    assert set(report.agreement) == {"attribution", "retrieval"}
    assert report.agreement["attribution"]["spearman"] > 0.5  # linearisation of the same quantity
    assert report.agreement["attribution"]["jaccard"] >= 0.5
    assert "| attribution | patching |" in report.table()
    # the copying head (patching's top) is a retrieval head in Wu et al.'s sense
    top1 = scores["patching"].top_k(1)[0]
    assert scores["retrieval"].values[top1] >= 0.5


def test_validation_refuses_its_own_method_in_compare_and_no_probes(trained):
    model, probes, scores = trained
    with pytest.raises(ScoringError, match="compare holds patching scores, the method of the scores being validated"):
        validate_scores(model, probes, scores["patching"], top_k=2, seeds=(0,),
                        compare={"patching": scores["attribution"]})  # silently replaced them in the table
    with pytest.raises(ScoringError, match="needs at least one probe"):
        teacher_forced_accuracy(model, [])  # ZeroDivisionError


def test_plan_from_trained_scores_keeps_the_recall_heads(trained):
    _, _, scores = trained
    plan = HeadPlan.from_scores(scores["patching"], ratio="3:1", min_per_layer=0)  # 2 of 8 heads
    assert {(l, h) for l, heads in enumerate(plan.fa_heads) for h in heads} == set(scores["patching"].top_k(2))


def test_layer_similarity_on_probes(trained, tmp_path):
    model, probes, _ = trained
    sim = layer_similarity(model, probes[:4])
    assert sim.matrix.shape == (2, 2)
    np.testing.assert_allclose(np.diag(sim.matrix), 1.0, atol=1e-5)
    np.testing.assert_allclose(sim.matrix, sim.matrix.T, atol=1e-6)
    sim.plot(tmp_path / "layers.png")
    assert (tmp_path / "layers.png").read_bytes()[:4] == b"\x89PNG"


def test_niah_accuracy_runs_on_a_converted_hybrid_when_nothing_is_ablated(trained):
    """Students are measured with the same probes as the teacher; an exact full-FA hybrid scores the same."""
    import copy

    import hydrahead
    from hydrahead import HybridOptions

    model, probes, _ = trained
    hybrid = hydrahead.convert(copy.deepcopy(model), HeadPlan.full(model.config), HybridOptions.preset("exact")).eval()
    assert teacher_forced_accuracy(hybrid, probes) == teacher_forced_accuracy(model, probes)


def test_layer_similarity_needs_probes(trained):
    model = trained[0]
    for probes in ([], [torch.tensor([1, 2, 3])]):  # a bare assertion, an AttributeError before
        with pytest.raises(ScoringError, match="takes a non-empty list of probes"):
            layer_similarity(model, probes)
