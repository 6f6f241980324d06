"""On the CPU, in inference, a hybrid's forward over a long input runs as consecutive forwards of one piece of
tokens each through the cache (`inference_piece`): the logits, hidden states, loss, cache and next steps of one
forward, and `generate`'s tokens, with piece-sized temporaries. PIECE_BYTES is made small here so that the tiny
models get 64-token pieces (2 rows x 96 intermediate x 4 bytes per token)."""

import pytest
import torch

import hydrahead
from hydrahead import HeadPlan, HybridHeadCache, HybridOptions
from hydrahead.models.hybrid import inference_piece
from hydrahead.utils import memory
from tests.conftest import make_teacher

PIECE = 64 * 2 * 96 * 4  # 64 tokens of a 2-row batch
ONE = 1 << 40  # one piece for any input here


def hybrid(family="qwen2", **overrides):  # qwen2: q/k/v biases, which padding must not leak through
    teacher = make_teacher(family, **overrides)
    return hydrahead.convert(teacher, HeadPlan(((0,), (1, 3)), 4, 2),
                             HybridOptions.preset("paper", train_length=8)).eval()  # log-length scale from 8 on


def widths(model):
    """The token count of every forward of the decoder stack, recorded while in a `with` block."""
    seen = []
    hook = model.model.register_forward_pre_hook(
        lambda m, a, kw: seen.append((kw.get("input_ids") if kw.get("input_ids") is not None
                                      else kw["inputs_embeds"]).shape[1]), with_kwargs=True)
    return seen, hook


def run(model, ids, mask, piece_bytes, monkeypatch, before=0, **kwargs):
    """A forward over ids[:, before:] after one over ids[:, :before] (a filled cache), then one decode step."""
    monkeypatch.setattr(memory, "PIECE_BYTES", piece_bytes)
    cache = HybridHeadCache(model.config)
    seen, hook = widths(model)
    try:
        with torch.no_grad():
            if before:
                model(ids[:, :before], attention_mask=mask[:, :before], past_key_values=cache, use_cache=True)
            out = model(ids[:, before:], attention_mask=mask, past_key_values=cache, use_cache=True, **kwargs)
            step = model(ids[:, :1], attention_mask=torch.cat([mask, mask[:, :1]], 1), past_key_values=cache,
                         use_cache=True, position_ids=mask.sum(1, keepdim=True))
    finally:
        hook.remove()
    return out, step.logits, cache, seen


def padded_batch(model, T=150, pad=7):
    ids = torch.randint(1, model.config.vocab_size, (2, T))
    mask = torch.ones_like(ids)
    mask[1, :pad] = 0  # left padding in one row
    return ids, mask


def assert_same_cache(a: HybridHeadCache, b: HybridHeadCache):
    for la, lb in zip(a.layers, b.layers):
        torch.testing.assert_close(lb.recurrent_states[0], la.recurrent_states[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(lb.conv_states[0], la.conv_states[0], rtol=1e-5, atol=1e-5)
        if la.keys is not None and la.keys.numel():
            torch.testing.assert_close(lb.keys, la.keys, rtol=1e-5, atol=1e-5)
        assert lb.get_seq_length() == la.get_seq_length()


@pytest.mark.parametrize("family,before", [("qwen2", 0), ("qwen2", 5), ("qwen3", 0), ("llama", 0),
                                           ("mistral", 0)])
def test_pieces_give_the_logits_cache_and_next_step_of_one_forward(family, before, monkeypatch):
    model = hybrid(family, **({"sliding_window": 48} if family == "mistral" else {}))
    ids, mask = padded_batch(model)
    whole = run(model, ids, mask, ONE, monkeypatch, before)
    pieces = run(model, ids, mask, PIECE, monkeypatch, before)
    T = 150 - before
    assert whole[3][-2:] == [T, 1] and pieces[3][-4:] == [64, 64, T - 128, 1]
    torch.testing.assert_close(pieces[0].logits, whole[0].logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pieces[1], whole[1], rtol=1e-5, atol=1e-5)
    assert_same_cache(whole[2], pieces[2])


def test_pieces_put_kept_logits_hidden_states_and_the_loss_together(monkeypatch):
    model = hybrid()
    ids, mask = padded_batch(model)
    for keep in (0, 1, 100):
        kwargs = dict(logits_to_keep=keep, output_hidden_states=True)
        whole, pieces = (run(model, ids, mask, size, monkeypatch, **kwargs)[0] for size in (ONE, PIECE))
        assert pieces.logits.shape == whole.logits.shape == (2, keep or 150, model.config.vocab_size)
        torch.testing.assert_close(pieces.logits, whole.logits, rtol=1e-5, atol=1e-5)
        assert len(pieces.hidden_states) == len(whole.hidden_states) == model.config.num_hidden_layers + 1
        for a, b in zip(whole.hidden_states, pieces.hidden_states):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    labels = ids.masked_fill(mask == 0, -100)
    whole, pieces = (run(model, ids, mask, size, monkeypatch, labels=labels)[0] for size in (ONE, PIECE))
    torch.testing.assert_close(pieces.loss, whole.loss, rtol=1e-6, atol=1e-6)


def test_without_use_cache_pieces_return_no_cache_and_tuples_when_asked(monkeypatch):
    model = hybrid()
    ids, mask = padded_batch(model)
    monkeypatch.setattr(memory, "PIECE_BYTES", PIECE)
    seen, hook = widths(model)
    with torch.no_grad():
        pieces = model(ids, attention_mask=mask, use_cache=False)
        monkeypatch.setattr(memory, "PIECE_BYTES", ONE)
        whole = model(ids, attention_mask=mask, use_cache=False)
        monkeypatch.setattr(memory, "PIECE_BYTES", PIECE)
        as_tuple = model(ids, attention_mask=mask, use_cache=False, return_dict=False)
    hook.remove()
    assert seen == [64, 64, 22, 150, 64, 64, 22] and pieces.past_key_values is None
    torch.testing.assert_close(pieces.logits, whole.logits, rtol=1e-5, atol=1e-5)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1 and torch.equal(as_tuple[0], pieces.logits)


def test_generate_prefills_a_long_prompt_in_pieces(monkeypatch):
    """A 150-token left-padded batch: three prefill forwards, then one per step, and the tokens of one piece."""
    model = hybrid()
    model.generation_config.eos_token_id = None  # random weights: an EOS would end one run early
    ids, mask = padded_batch(model, pad=9)
    outs = []
    for size in (PIECE, ONE):
        monkeypatch.setattr(memory, "PIECE_BYTES", size)
        seen, hook = widths(model)
        outs.append((model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0),
                     seen))
        hook.remove()
    assert outs[0][1] == [64, 64, 22, 1, 1, 1] and outs[1][1] == [150, 1, 1, 1]
    assert torch.equal(outs[0][0], outs[1][0])


@pytest.mark.parametrize("case", ["grad", "cuda", "short", "attentions", "keep indices", "keep with labels",
                                  "4D mask", "mask dict", "packed rows"])
def test_one_forward_where_pieces_do_not_apply(case, monkeypatch):
    model = hybrid()
    monkeypatch.setattr(memory, "PIECE_BYTES", PIECE)
    x, mask, position_ids, use_cache, kwargs = torch.ones(2, 150, dtype=torch.long), None, None, True, {}
    with torch.no_grad():
        assert inference_piece(model, x, mask, position_ids, None, use_cache, kwargs) == [64, 64, 22]
        if case == "cuda":
            x = torch.empty(2, 150, device="meta")
        elif case == "short":
            x = x[:, :64]
        elif case == "attentions":
            kwargs = {"output_attentions": True}
        elif case == "keep indices":
            kwargs = {"logits_to_keep": torch.tensor([3, 4])}
        elif case == "keep with labels":
            kwargs = {"logits_to_keep": 1, "labels": x}
        elif case == "4D mask":
            mask = torch.ones(2, 1, 150, 150)
        elif case == "mask dict":  # what transformers builds for a static cache of a model with layer types
            mask = {"full_attention": torch.ones(2, 1, 150, 150)}
        elif case == "packed rows":  # two documents per row, no cache: the GDN heads restart at the second
            position_ids, use_cache = torch.cat([torch.arange(100), torch.arange(50)])[None], False
        with torch.enable_grad() if case == "grad" else torch.no_grad():
            assert inference_piece(model, x, mask, position_ids, None, use_cache, kwargs) is None


@pytest.mark.parametrize("family", ["qwen3", "llama"])
def test_a_static_cache_generate_with_a_long_prompt(family, monkeypatch):
    """transformers builds a static cache's masks in generate (a per-layer-type dict for Qwen3, a 4D tensor for
    Llama): such a prefill runs in one forward, with the tokens of one piece."""
    model = hybrid(family)
    model.generation_config.eos_token_id = None
    ids, mask = padded_batch(model)
    outs = []
    for size in (PIECE, ONE):
        monkeypatch.setattr(memory, "PIECE_BYTES", size)
        outs.append(model.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False, pad_token_id=0,
                                   cache_implementation="static"))
    assert torch.equal(outs[0], outs[1])


def test_generate_keeps_only_the_last_logits_of_a_prefill(monkeypatch):
    """forward declares logits_to_keep, so generate asks a prefill for one position's logits: pieces then
    compute the last piece's last row only, not the whole prompt's logits."""
    model = hybrid()
    monkeypatch.setattr(memory, "PIECE_BYTES", PIECE)
    shapes = []
    hook = model.lm_head.register_forward_hook(lambda m, a, out: shapes.append(tuple(out.shape[:2])))
    try:
        model.generate(torch.ones(2, 150, dtype=torch.long), max_new_tokens=2, do_sample=False, pad_token_id=0)
    finally:
        hook.remove()
    assert shapes == [(2, 0), (2, 0), (2, 1), (2, 1)]


def test_use_cache_false_refuses_a_foreign_cache_as_one_forward_does(monkeypatch):
    from transformers import DynamicCache

    model = hybrid()
    monkeypatch.setattr(memory, "PIECE_BYTES", PIECE)
    for T in (50, 150):
        with torch.no_grad(), pytest.raises(hydrahead.CacheError, match="not a DynamicCache"):
            model(torch.ones(2, T, dtype=torch.long), past_key_values=DynamicCache(config=model.config),
                  use_cache=False)


def test_pieces_are_sized_by_the_widest_activation(monkeypatch):
    """A branch's fused q | k | v can be wider than the MLP (GDN heads each keep their group's k and v): the
    pieces keep that temporary within PIECE_BYTES too (a Qwen3-0.6B-shaped 7:1 hybrid's is 5,376 wide against an
    intermediate of 3,072)."""
    model = hybrid(intermediate_size=16)
    widest = max(layer.self_attn.gdn.qkv_proj.out_features for layer in model.model.layers)
    assert model.widest_activation == widest > 16
    monkeypatch.setattr(memory, "PIECE_BYTES", 64 * 2 * widest * 4)  # 64 tokens of a 2-row batch
    with torch.no_grad():
        assert inference_piece(model, torch.ones(2, 150, dtype=torch.long), None, None, None, True, {}) == [64, 64, 22]
