"""Hybrid cache and generation: greedy decode with the cache equals recomputation; padding does not leak."""

import pytest
import torch

import hydrahead
from hydrahead import HeadPlan, HybridOptions
from tests.conftest import make_teacher

PLANS = {
    "mixed": ((0, 3), (2,)),
    "no-fa-in-layer0": ((), (1, 2)),
    "all-gdn": ((), ()),
}


def hybrid(family="qwen3", plan="mixed", preset="paper", **options):
    teacher = make_teacher(family)
    cfg = teacher.config
    model = hydrahead.convert(teacher, HeadPlan(PLANS[plan], cfg.num_attention_heads, cfg.num_key_value_heads),
                              HybridOptions.preset(preset, train_length=8, **options)).eval()
    # Random weights emit any token; an EOS would end generation early and hide the comparison.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0  # prompts are drawn from 1 on: generate reads a 0 as padding

    return model


def greedy_by_recomputation(model, ids, steps):
    for _ in range(steps):
        with torch.no_grad():
            logits = model(ids, use_cache=False).logits[:, -1]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids


@pytest.mark.parametrize("plan", list(PLANS))
def test_generate_equals_recomputation(plan):
    # train_length=8 puts the log-length scale to work inside this short test.
    model = hybrid(plan=plan)
    ids = torch.randint(1, model.config.vocab_size, (1, 11))
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert torch.equal(out, greedy_by_recomputation(model, ids, 8))


def test_generate_equals_recomputation_each_family(family):
    model = hybrid(family=family)
    ids = torch.randint(1, model.config.vocab_size, (2, 9))
    out = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert torch.equal(out, greedy_by_recomputation(model, ids, 6))


def test_cached_logits_match_full_forward():
    """Prefill + one-token steps with the cache give the logits of a single full forward."""
    model = hybrid()
    ids = torch.randint(1, model.config.vocab_size, (2, 14))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        cache = hydrahead.HybridHeadCache(model.config)
        pieces = [model(ids[:, :9], past_key_values=cache, use_cache=True).logits]
        for t in range(9, 14):
            pieces.append(model(ids[:, t : t + 1], past_key_values=cache, use_cache=True).logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-4, atol=1e-5)


def test_batched_left_padding_equals_one_by_one():
    model = hybrid()
    lengths = [5, 12, 8]
    prompts = [torch.randint(1, model.config.vocab_size, (n,)) for n in lengths]
    width = max(lengths)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = p
        mask[i, width - len(p):] = 1
    batched = model.generate(ids, attention_mask=mask, max_new_tokens=7, do_sample=False)
    for i, p in enumerate(prompts):
        alone = model.generate(p[None], max_new_tokens=7, do_sample=False)
        assert torch.equal(batched[i, width:], alone[0, len(p):]), f"prompt {i} differs"


def test_cache_holds_only_fa_kv_heads():
    model = hybrid()
    ids = torch.randint(1, model.config.vocab_size, (2, 10))
    with torch.no_grad():
        cache = model(ids, use_cache=True).past_key_values
    assert isinstance(cache, hydrahead.HybridHeadCache)
    plan = model.hydrahead_plan
    for i, layer in enumerate(cache.layers):
        assert layer.keys.shape == (2, plan.fa_kv_heads_per_layer[i], 10, model.config.head_dim)
        assert layer.recurrent_states[0].shape[1] == len(plan.gdn_heads(i))
    D = model.config.head_dim
    assert cache.nbytes()["kv"] == 2 * 2 * 10 * D * 4 * sum(plan.fa_kv_heads_per_layer)


def test_a_transformers_cache_is_refused_in_forward_and_generate():
    """Empty or filled, with or without use_cache: a substitute would leave the caller's cache empty, so a loop that
    passes the same object again would restart at position 0 without a word (and DynamicCache() without a config
    has no layers to index)."""
    from transformers import DynamicCache, StaticCache

    model = hybrid()
    ids = torch.ones(1, 3, dtype=torch.long)
    filled = DynamicCache()
    filled.update(torch.zeros(1, 2, 3, model.config.head_dim), torch.zeros(1, 2, 3, model.config.head_dim), 0)
    caches = [filled, DynamicCache(), DynamicCache(config=model.config), StaticCache(model.config, max_cache_len=8)]
    for cache in caches:
        for use_cache in (True, False):
            with torch.no_grad(), pytest.raises(hydrahead.CacheError, match="pass past_key_values=hydrahead.Hybrid"):
                model(ids, past_key_values=cache, use_cache=use_cache)
        with pytest.raises(hydrahead.CacheError, match="not a (Dynamic|Static)Cache"):
            model.generate(ids, past_key_values=cache, max_new_tokens=2)
    with pytest.raises(hydrahead.CacheError, match="max_cache_len=N"):
        model(ids, past_key_values=caches[-1])


@pytest.mark.parametrize("max_cache_len", [None, 16])
def test_a_plain_model_given_a_hybrid_cache_is_refused(max_cache_len):
    """The other way round: a teacher's attention wrote its K/V into a HybridHeadCache that never counted the
    tokens, so its next step ran at position 0 (logits 0.02 off on the tiny teacher, silently)."""
    teacher, ids = make_teacher(), torch.ones(1, 3, dtype=torch.long)
    cache = hydrahead.HybridHeadCache(hybrid().config, max_cache_len=max_cache_len)
    with torch.no_grad(), pytest.raises(hydrahead.CacheError, match="a plain transformers model takes transformers' "
                                                                     r"own: past_key_values=DynamicCache\(config="):
        teacher(ids, past_key_values=cache, use_cache=True)
    with pytest.raises(hydrahead.CacheError, match="HybridHeadCache is a hydrahead model's cache"):
        teacher.generate(ids, past_key_values=cache, max_new_tokens=2)


@pytest.mark.parametrize("plan, max_cache_len", [("mixed", None), ("no-fa-in-layer0", None), ("mixed", 16)])
def test_a_cache_filled_for_another_batch_is_refused(plan, max_cache_len):
    """torch's concatenation or index_copy_ error was all a caller got; a reset dynamic cache takes any batch."""
    model = hybrid(plan=plan)
    cache = hydrahead.HybridHeadCache(model.config, max_cache_len=max_cache_len)
    assert cache.batch_size == -1  # transformers' property: none yet
    with torch.no_grad():
        model(torch.ones(2, 3, dtype=torch.long), past_key_values=cache, use_cache=True)
        assert cache.batch_size == 2
        for batch in (1, 3):
            with pytest.raises(hydrahead.CacheError, match=f"the cache holds 2 sequences and this forward gives "
                                                           f"{batch}: a cache continues the batch it was filled with"):
                model(torch.ones(batch, 1, dtype=torch.long), past_key_values=cache, use_cache=True)
        if max_cache_len is None:
            cache.reset()
            model(torch.ones(1, 3, dtype=torch.long), past_key_values=cache, use_cache=True)
            assert cache.batch_size == 1


@pytest.mark.parametrize("max_cache_len", [None, 16])
def test_a_cache_filled_by_a_hybrid_of_another_plan_is_refused(max_cache_len):
    """torch's shape error in a norm or a concatenation was all a caller got; a hybrid of the same plan may continue
    the cache, and a reset dynamic cache takes any hybrid (a static one keeps its tensors' shapes)."""
    model, other = hybrid(plan="mixed"), hybrid(plan="no-fa-in-layer0")
    ids = torch.randint(1, model.config.vocab_size, (1, 5))
    cache = hydrahead.HybridHeadCache(model.config, max_cache_len=max_cache_len)
    with torch.no_grad():
        model(ids, past_key_values=cache)
        with pytest.raises(hydrahead.CacheError, match="the cache holds the states of a hybrid with another plan"):
            other(ids[:, :1], past_key_values=cache)
        hybrid(plan="mixed")(ids[:, :1], past_key_values=cache)  # the same plan and shapes: its states fit
        made = model(ids, use_cache=True).past_key_values  # a cache the forward made itself
        with pytest.raises(hydrahead.CacheError, match="another plan"):
            other(ids[:, :1], past_key_values=made)
        cache.reset()
        if max_cache_len is None:
            other(ids, past_key_values=cache)
        else:
            with pytest.raises(hydrahead.CacheError, match="another plan"):
                other(ids, past_key_values=cache)
            model(ids, past_key_values=cache)


@pytest.mark.parametrize("max_cache_len", [None, 16])
def test_a_padding_mask_of_another_shape_is_refused(max_cache_len):
    """A mask with another row count reached the GDN kernel's checks or torch's broadcast error; one too long for
    the tokens (which transformers' own models accept silently) now names the shape the forward needs."""
    model = hybrid()
    ids = torch.randint(1, model.config.vocab_size, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[0, :2] = 0
    cache = hydrahead.HybridHeadCache(model.config, max_cache_len=max_cache_len)
    with torch.no_grad():
        for wrong in (torch.ones(3, 6), torch.ones(1, 6), mask[:, 1:], torch.cat([mask, mask[:, :1]], 1)):
            shape = rf"\({wrong.shape[0]}, {wrong.shape[1]}\)"
            with pytest.raises(hydrahead.GenerationError, match=rf"shape {shape}; this forward needs \(2, 0 \+ 6\)"):
                model(ids, attention_mask=wrong.long())
        model(ids, attention_mask=mask, past_key_values=cache)
        step = torch.ones(2, 1, dtype=torch.long)
        model(step, attention_mask=torch.cat([mask, step], 1), past_key_values=cache)  # (B, past + T)
        with pytest.raises(hydrahead.GenerationError, match=r"needs \(2, 7 \+ 1\)"):  # static: its host count
            model(step, attention_mask=torch.cat([mask, step], 1), past_key_values=cache)
        with pytest.raises(hydrahead.GenerationError, match="needs"):
            model(step, attention_mask=torch.ones(3, 8, dtype=torch.long), past_key_values=cache)


def test_a_4d_mask_without_the_2d_padding_is_refused():
    """The FA heads followed a 4D mask and the GDN heads took every token as real: a left-padded row's logits
    differed from the same row under its 2D mask. Static-cache generate passes both (`linear_attention_mask`)."""
    model = hybrid()
    ids = torch.randint(1, model.config.vocab_size, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[0, :2] = 0
    allowed = torch.ones(6, 6, dtype=torch.bool).tril()[None] & mask.bool()[:, None, :] | torch.eye(6, dtype=torch.bool)
    four = torch.zeros(2, 1, 6, 6).masked_fill(~allowed[:, None], torch.finfo(torch.float32).min)
    with torch.no_grad():
        with pytest.raises(hydrahead.GenerationError, match=r"shape \(2, 1, 6, 6\): a hybrid's GDN heads read padding"):
            model(ids, attention_mask=four)
        with pytest.raises(hydrahead.GenerationError, match="shape dict: a hybrid's GDN heads read padding"):
            model(ids, attention_mask={"full_attention": four})  # the per-layer-type form transformers takes
        both = model(ids, attention_mask=four, linear_attention_mask=mask).logits
        torch.testing.assert_close(both[0, 2:], model(ids, attention_mask=mask).logits[0, 2:])


@pytest.mark.parametrize("implementation", ["offloaded", "quantized"])
def test_caches_without_a_hybrid_form_are_refused(implementation):
    with pytest.raises(hydrahead.CacheError, match=f"{implementation}.*not supported"):
        hybrid().generate(torch.ones(1, 3, dtype=torch.long), cache_implementation=implementation, max_new_tokens=2)


def test_a_loop_through_one_hybrid_cache_continues_it():
    """The manual loop transformers' docs write with a DynamicCache, with a HybridHeadCache: the object passed in
    is the one filled, and generate's own cache (made by the model) is a HybridHeadCache."""
    model = hybrid()
    ids = torch.randint(1, model.config.vocab_size, (1, 9))
    cache = hydrahead.HybridHeadCache(model.config)
    with torch.no_grad():
        model(ids[:, :6], past_key_values=cache)
        last = model(ids[:, 6:], past_key_values=cache).logits[:, -1]
        assert torch.allclose(last, model(ids, use_cache=False).logits[:, -1], atol=1e-5)
    out = model.generate(ids, max_new_tokens=2, do_sample=False, return_dict_in_generate=True)
    assert isinstance(out.past_key_values, hydrahead.HybridHeadCache)


def left_padded(model, lengths=(5, 12, 8)):
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, width - n:] = torch.randint(1, model.config.vocab_size, (n,))
        mask[i, width - n:] = 1
    return ids, mask


def test_shared_kv_generation_equals_recomputation():
    model = hybrid(gdn_shared_kv=True)
    ids = torch.randint(1, model.config.vocab_size, (2, 9))
    out = model.generate(ids, max_new_tokens=6, do_sample=False, cache_implementation="static")
    assert torch.equal(out, greedy_by_recomputation(model, ids, 6))


@pytest.mark.parametrize("plan", list(PLANS))
def test_static_cache_generates_the_dynamic_caches_tokens_with_left_padding(plan):
    model = hybrid(plan=plan)
    ids, mask = left_padded(model)
    dynamic = model.generate(ids, attention_mask=mask, max_new_tokens=7, do_sample=False)
    out = model.generate(ids, attention_mask=mask, max_new_tokens=7, do_sample=False,
                         cache_implementation="static", return_dict_in_generate=True)
    assert torch.equal(out.sequences, dynamic)
    cache = out.past_key_values
    assert isinstance(cache, hydrahead.HybridHeadCache) and cache.is_static
    assert int(cache.get_seq_length()) == ids.shape[1] + 6  # the last token is never fed back


@pytest.mark.parametrize("cache_implementation", [None, "static"])
def test_generate_from_input_embeddings_gives_the_tokens_of_their_ids(cache_implementation):
    """As a transformers model does (the output holds the new tokens only); the hybrid refused inputs_embeds
    ("model_kwargs are not used by the model") when neither forward nor prepare_inputs_for_generation named it."""
    model = hybrid()
    ids, mask = left_padded(model)
    kwargs = {"attention_mask": mask, "max_new_tokens": 6, "do_sample": False,
              "cache_implementation": cache_implementation}
    from_ids = model.generate(ids, **kwargs)
    from_embeddings = model.generate(inputs_embeds=model.get_input_embeddings()(ids), **kwargs)
    assert torch.equal(from_embeddings, from_ids[:, ids.shape[1]:])


@pytest.mark.parametrize("cache_implementation", [None, "static"])
def test_chunked_prefill_generates_the_one_piece_tokens_with_left_padding(cache_implementation):
    """generate(prefill_chunk_size=N) feeds the prompt through the cache in pieces: the conv window, the GDN
    state and the padding mask must carry across the pieces (5 + 5 + 2 tokens here; padding ends mid-piece)."""
    model = hybrid()
    ids, mask = left_padded(model)
    whole = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                           cache_implementation=cache_implementation)
    pieces = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                            cache_implementation=cache_implementation, prefill_chunk_size=5)
    assert torch.equal(pieces, whole)


def test_compiled_decode_step_gives_the_eager_tokens_in_one_graph():
    """fullgraph=True: the whole decode step is captured (no graph break), and one graph serves every
    step (no recompilation). The eager backend checks the capture without paying for code generation."""
    from torch._dynamo.utils import counters
    from transformers import CompileConfig

    model = hybrid()
    ids, mask = left_padded(model)
    eager = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    config = CompileConfig(fullgraph=True, backend="eager", mode=None, dynamic=False)
    config._compile_all_devices = True  # transformers compiles on GPUs only unless told
    torch._dynamo.reset()
    counters.clear()
    compiled = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                              cache_implementation="static", compile_config=config)
    assert torch.equal(compiled, eager)
    assert counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()


def test_one_token_prefill_pieces_of_a_padded_batch_are_refused():
    """A one-token forward through a cache is a decode step (its token real in every row): padding fed that way
    would enter the GDN states, so generate refuses the setting that does it, and takes it without padding."""
    model = hybrid()
    ids, mask = left_padded(model)
    with pytest.raises(hydrahead.CacheError, match="prefill_chunk_size=2 or more"):
        model.generate(ids, attention_mask=mask, max_new_tokens=2, prefill_chunk_size=1)
    row = ids[1:2]  # the longest row: no padding
    out = model.generate(row, attention_mask=torch.ones_like(row), max_new_tokens=3, do_sample=False,
                         prefill_chunk_size=1)
    assert torch.equal(out, greedy_by_recomputation(model, row, 3))


def test_static_cache_overflow_is_a_clear_error():
    model = hybrid()
    cache = hydrahead.HybridHeadCache(model.config, max_cache_len=8)
    assert cache.get_max_length() == 8  # transformers' linear-attention layers would say -1 (no maximum)
    with torch.no_grad():
        model(torch.ones(1, 6, dtype=torch.long), past_key_values=cache, use_cache=True)
        with pytest.raises(hydrahead.CacheError, match="holds 8 tokens"):
            model(torch.ones(1, 3, dtype=torch.long), past_key_values=cache, use_cache=True)


def test_static_cache_overflow_is_caught_after_compiled_steps():
    """Compiled steps move only the device counter (no host sync in a step); the next eager write reads it
    once, so the overflow is still a clear error, not an out-of-bounds write."""
    model = hybrid()
    cache = hydrahead.HybridHeadCache(model.config, max_cache_len=8)
    with torch.no_grad():
        model(torch.ones(1, 6, dtype=torch.long), past_key_values=cache, use_cache=True)
        for layer in cache.layers:  # what two compiled one-token steps leave behind
            layer.cumulative_length.add_(2)
            layer.tokens_stale = True
        with pytest.raises(hydrahead.CacheError, match="writing 1 more after 8"):
            model(torch.ones(1, 1, dtype=torch.long), past_key_values=cache, use_cache=True)


def test_static_cache_refuses_sliding_window_layers():
    teacher = make_teacher("qwen2", use_sliding_window=True, sliding_window=4, max_window_layers=1)
    assert any(t == "sliding_attention" for t in teacher.config.layer_types)
    model = hydrahead.convert(teacher, HeadPlan(((0,), (1,)), 4, 2), HybridOptions.preset("exact")).eval()
    with pytest.raises(hydrahead.CacheError, match="does not support sliding-window"):
        model.generate(torch.ones(1, 3, dtype=torch.long), max_new_tokens=2, cache_implementation="static")
    assert model.generate(torch.ones(1, 3, dtype=torch.long), max_new_tokens=2, do_sample=False).shape == (1, 5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shared_kv", [False, True], ids=["kv-per-head", "kv-shared"])
@pytest.mark.parametrize("max_cache_len", [None, 32])
def test_cache_bytes_are_what_the_footprint_says(max_cache_len, shared_kv, dtype):
    """fp64 included: its recurrent state is fp64 too (the plan's figure said fp32)."""
    from hydrahead.models.footprint import footprint

    model = hybrid(gdn_shared_kv=shared_kv).to(dtype)
    B, T = 3, 10
    cache = hydrahead.HybridHeadCache(model.config, max_cache_len=max_cache_len)
    with torch.no_grad():
        model(torch.randint(1, model.config.vocab_size, (B, T)), past_key_values=cache, use_cache=True)
    expected = footprint(model)
    held = cache.nbytes()
    assert held["kv"] == B * (max_cache_len or T) * expected["kv_bytes_per_token"]
    assert held["recurrent"] + held["conv"] == B * expected["state_bytes_per_sequence"]


@pytest.mark.parametrize("cache_implementation", [None, "static"])
@pytest.mark.parametrize("plan", ["mixed", "no-fa-in-layer0"])
def test_beam_search_equals_beam_search_without_a_cache(plan, cache_implementation):
    """Beam search reorders every cache layer's states and, where the layer has them, its K/V ("mixed" has FA
    heads in every layer, "no-fa-in-layer0" none in layer 0); a static cache reorders them in place."""
    model = hybrid(plan=plan)
    ids = torch.randint(1, model.config.vocab_size, (2, 7))
    out = model.generate(ids, max_new_tokens=6, num_beams=3, do_sample=False,
                         cache_implementation=cache_implementation)
    assert torch.equal(out, model.generate(ids, max_new_tokens=6, num_beams=3, do_sample=False, use_cache=False))


@pytest.mark.parametrize("max_cache_len", [None, 32])
def test_a_reset_cache_runs_as_a_fresh_one(max_cache_len):
    """reset() puts the cache back to a fresh one: the next tokens see nothing of the earlier ones (transformers'
    dynamic reset zeroes K/V but keeps their length)."""
    model = hybrid()
    first, second = torch.randint(1, model.config.vocab_size, (2, 9)), torch.randint(1, model.config.vocab_size, (2, 5))
    with torch.no_grad():
        cache = hydrahead.HybridHeadCache(model.config, max_cache_len=max_cache_len)
        model(first, past_key_values=cache, use_cache=True)
        cache.reset()
        assert int(cache.get_seq_length()) == 0
        got = [model(second, past_key_values=cache, use_cache=True).logits,
               model(first[:, :1], past_key_values=cache, use_cache=True).logits]
        fresh = hydrahead.HybridHeadCache(model.config, max_cache_len=max_cache_len)
        expected = [model(second, past_key_values=fresh, use_cache=True).logits,
                    model(first[:, :1], past_key_values=fresh, use_cache=True).logits]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


@pytest.mark.parametrize("plan", ["mixed", "no-fa-in-layer0"])
def test_gradients_through_a_cache_equal_one_forwards(plan):
    """Training on consecutive segments through one dynamic cache (as with transformers' DynamicCache): the
    gradient of every weight equals that of one forward over the whole sequence, the later segments' reaching
    the earlier ones through K/V, the conv inputs and the GDN state (a decode-sized segment among them)."""
    model = hybrid(plan=plan).train()  # the tiny config has no dropout
    ids = torch.randint(1, model.config.vocab_size, (2, 16))
    weights = torch.randn(2, 16, model.config.vocab_size)  # a loss that weighs every logit differently

    def gradients(logits):
        model.zero_grad()
        (logits * weights).sum().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    whole = gradients(model(ids, use_cache=False).logits)
    cache = hydrahead.HybridHeadCache(model.config)
    pieces = gradients(torch.cat([model(ids[:, a:b], past_key_values=cache, use_cache=True).logits
                                  for a, b in ((0, 8), (8, 9), (9, 16))], dim=1))
    assert pieces.keys() == whole.keys()
    for name, grad in whole.items():
        torch.testing.assert_close(pieces[name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_assisted_and_prompt_lookup_decoding_are_refused_in_one_line():
    """Both roll the cache back after rejected draft tokens, which a GDN state cannot: refused before anything
    runs, as the main model or as another model's assistant."""
    model = hybrid()
    teacher = make_teacher()
    ids = torch.randint(1, model.config.vocab_size, (1, 6)).repeat(1, 3)
    calls = [lambda: model.generate(ids, max_new_tokens=4, do_sample=False, prompt_lookup_num_tokens=3),
             lambda: model.generate(ids, max_new_tokens=4, do_sample=False, prompt_lookup_num_tokens=3,
                                    past_key_values=hydrahead.HybridHeadCache(model.config)),
             lambda: model.generate(ids, max_new_tokens=4, do_sample=False, assistant_model=teacher),
             lambda: teacher.generate(ids, max_new_tokens=4, do_sample=False, assistant_model=model,
                                      pad_token_id=0)]
    for call in calls:
        with pytest.raises(hydrahead.CacheError, match="cannot be rolled back: assisted / prompt-lookup decoding"):
            call()
