import pytest
import torch

import hydrahead
from hydrahead import HeadPlan, HybridOptions
from hydrahead.models.heads import HeadHooks
from tests.conftest import make_teacher

MIXED = ((0, 3), (2,))  # layer 0: heads 0 and 3 (KV groups 0 and 1); layer 1: head 2 only


def mixed_plan(config) -> HeadPlan:
    return HeadPlan(MIXED, config.num_attention_heads, config.num_key_value_heads)


def test_full_plan_exact_preset_reproduces_teacher(family):
    teacher = make_teacher(family)
    model = hydrahead.convert(teacher, HeadPlan.full(teacher.config), HybridOptions.preset("exact"))
    assert not any(layer.self_attn.mean_bias for layer in model.model.layers)  # no GDN heads: o_proj as the teacher's
    ids = torch.randint(0, teacher.config.vocab_size, (2, 37))
    with torch.no_grad():
        expected = teacher(ids).logits
        got = model(ids).logits
    assert (got - expected).abs().max().item() <= 1e-5


def test_convert_does_not_touch_teacher():
    teacher = make_teacher("qwen3")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    hydrahead.convert(teacher, mixed_plan(teacher.config), HybridOptions.preset("paper"))
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_result_is_a_transformers_model_of_the_family(family):
    teacher = make_teacher(family)
    model = hydrahead.convert(teacher, mixed_plan(teacher.config))
    assert isinstance(model, type(teacher))
    assert hydrahead.is_hybrid(model)
    assert model.config.model_type == f"hydrahead_{family}"


def test_parameter_reuse_and_o_proj_permutation():
    """With exact FA and a GDN branch, the FA rows are the teacher's and o_proj columns follow head order."""
    teacher = make_teacher("qwen3")
    model = hydrahead.convert(teacher, mixed_plan(teacher.config), HybridOptions.preset("exact"))
    D = teacher.config.head_dim
    src, dst = teacher.model.layers[0].self_attn, model.model.layers[0].self_attn
    assert dst.head_order == (0, 3, 1, 2)
    # fused projections: FA rows q | k | v, GDN rows q (2 heads) | k (one copy per head) | v
    torch.testing.assert_close(dst.fa.qkv_proj.weight[D : 2 * D], src.q_proj.weight[3 * D : 4 * D], rtol=0, atol=0)
    # GDN head 1 reads KV group 0, GDN head 2 reads KV group 1
    torch.testing.assert_close(dst.gdn.qkv_proj.weight[2 * D : 3 * D], src.k_proj.weight[:D], rtol=0, atol=0)
    torch.testing.assert_close(dst.gdn.qkv_proj.weight[5 * D :], src.v_proj.weight[D:], rtol=0, atol=0)
    assert not dst.gdn.ab_proj.weight.any()  # a and b start input-independent
    torch.testing.assert_close(dst.o_proj.weight[:, 2 * D : 3 * D], src.o_proj.weight[:, D : 2 * D], rtol=0, atol=0)


@pytest.mark.parametrize("mean_output", [False, True])
def test_fusion_gains_start_at_teacher_head_rms(mean_output):
    """FA gains: the heads' RMS; GDN gains: their RMS, or with the mean output in o_proj's bias, the RMS around it."""
    teacher = make_teacher("llama")
    calib = torch.randint(0, teacher.config.vocab_size, (2, 16))
    options = HybridOptions.preset("paper", gdn_mean_output=mean_output)
    model = hydrahead.convert(teacher, mixed_plan(teacher.config), options, calibration=calib)
    statistics = hydrahead.models.convert.teacher_head_statistics(teacher, calib)
    attn = model.model.layers[1].self_attn
    torch.testing.assert_close(attn.fa_norm.gain.detach(), statistics.rms[1, [2]])
    gdn = statistics.centred_rms if mean_output else statistics.rms
    torch.testing.assert_close(attn.gdn_norm.gain.detach(), gdn[1, [0, 1, 3]])


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_without_a_calibration_batch_the_mean_output_starts_at_zero(family):
    """Random tokens give the gains, not a head's mean (its mean over random tokens is not its mean on text):
    o_proj's bias is zero, or the teacher's where its o_proj has one (this llama's; qwen2's has none)."""
    teacher = make_teacher(family)
    model = hydrahead.convert(teacher, mixed_plan(teacher.config), HybridOptions.preset("paper"))
    random_tokens = torch.randint(0, teacher.config.vocab_size, hydrahead.models.convert.CALIBRATION_SHAPE,
                                  generator=torch.Generator().manual_seed(0))
    statistics = hydrahead.models.convert.teacher_head_statistics(teacher, random_tokens)
    attn, teacher_bias = model.model.layers[1].self_attn, teacher.model.layers[1].self_attn.o_proj.bias
    assert attn.mean_bias
    assert torch.equal(attn.o_proj.bias, teacher_bias if teacher_bias is not None else torch.zeros_like(attn.o_proj.bias))
    torch.testing.assert_close(attn.gdn_norm.gain.detach(), statistics.rms[1, [0, 1, 3]])


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_gdn_heads_start_from_the_teacher_heads_mean_output(family):
    """With the GDN branches' output taken away, the converted model is the teacher with its GDN heads
    mean-ablated (each writes its calibration mean at every position: the ablation's own hook); without
    the mean output it is the teacher with them zeroed."""
    teacher = make_teacher(family)
    plan = mixed_plan(teacher.config)
    calib = torch.randint(0, teacher.config.vocab_size, (2, 16))
    statistics = hydrahead.models.convert.teacher_head_statistics(teacher, calib)
    ids = torch.randint(0, teacher.config.vocab_size, (2, 11))
    for mean_output in (True, False):
        model = hydrahead.convert(teacher, plan, HybridOptions.preset("exact", gdn_mean_output=mean_output),
                                  calibration=calib).eval()
        for layer in model.model.layers:
            if layer.self_attn.gdn is not None:
                layer.self_attn.gdn.register_forward_hook(lambda module, args, out: torch.zeros_like(out))
        with HeadHooks(teacher) as hooks, torch.no_grad():
            for i, heads in enumerate(plan.fa_heads):
                gdn = [h for h in range(teacher.config.num_attention_heads) if h not in heads]
                if gdn:
                    values = statistics.mean[i, gdn] if mean_output else torch.zeros(len(gdn), statistics.mean.shape[-1])
                    hooks.overwrites[i] = (gdn, values)
            expected = teacher(ids).logits
            got = model(ids).logits
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        layer = model.model.layers[1].self_attn
        assert layer.mean_bias == mean_output
        assert any(p is layer.o_proj.bias for p in hydrahead.hybrid_parameters(model)) == mean_output


@pytest.mark.parametrize("preset", ["paper", "exact"])
def test_mixed_plan_forward_backward(family, preset):
    teacher = make_teacher(family)
    model = hydrahead.convert(teacher, mixed_plan(teacher.config), HybridOptions.preset(preset)).train()
    ids = torch.randint(0, teacher.config.vocab_size, (2, 21))
    out = model(ids, labels=ids, use_cache=False)
    assert torch.isfinite(out.loss)
    out.loss.backward()


def test_gradients_reach_every_hybrid_parameter():
    teacher = make_teacher("qwen3")
    model = hydrahead.convert(teacher, mixed_plan(teacher.config), HybridOptions.preset("paper")).train()
    params = hydrahead.hybrid_parameters(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert params and all(id(p) in names for p in params)
    # zero-initialised gates would block gradients to nothing, but check every tensor really receives one
    ids = torch.randint(0, teacher.config.vocab_size, (2, 19))
    model(ids, labels=ids, use_cache=False).loss.backward()
    no_grad = [names[id(p)] for p in params if p.grad is None or not torch.any(p.grad != 0)]
    assert not no_grad, no_grad
    kinds = {names[id(p)].split("self_attn.")[1] for p in params}
    for expected in ("gdn.A_log", "gdn.dt_bias", "gdn.conv.weight", "fa.gate_proj.weight", "fa_norm.gain", "o_proj.bias"):
        assert expected in kinds


def test_hybrid_parameters_are_exactly_the_new_ones():
    teacher = make_teacher("qwen3")
    model = hydrahead.convert(teacher, mixed_plan(teacher.config), HybridOptions.preset("paper"))
    params = {id(p) for p in hydrahead.hybrid_parameters(model)}
    # o_proj's bias: the GDN heads' mean output (every layer of the plan has GDN heads)
    new_parts = ("self_attn.gdn.", "self_attn.fa.gate_proj.", "self_attn.fa_norm.", "self_attn.gdn_norm.",
                 "self_attn.o_proj.bias")
    for name, p in model.named_parameters():
        assert (id(p) in params) == any(part in name for part in new_parts), name


def test_permuted_layout_equals_teacher_head_order():
    """The execution layout (FA heads first) with permuted o_proj computes what the teacher-order layout would."""
    teacher = make_teacher("qwen2")
    options = HybridOptions.preset("paper", gdn_mean_output=False)  # o_proj's bias as the teacher's
    model = hydrahead.convert(teacher, mixed_plan(teacher.config), options).eval()
    attn, teacher_o = model.model.layers[0].self_attn, teacher.model.layers[0].self_attn.o_proj
    heads_in = {}
    handle = attn.o_proj.register_forward_pre_hook(lambda m, args: heads_in.setdefault("x", args[0]))
    ids = torch.randint(0, teacher.config.vocab_size, (2, 15))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True, use_cache=False)
        handle.remove()
        x = heads_in["x"].unflatten(-1, (4, -1))  # (B, T, H, D) in execution order
        teacher_order = torch.empty_like(x)
        teacher_order[:, :, list(attn.head_order)] = x
        layer0 = teacher_o(teacher_order.flatten(-2))
        h = model.model.layers[0].input_layernorm(out.hidden_states[0])
        position_embeddings = model.model.rotary_emb(h, torch.arange(15)[None])
        got, _ = attn(h, position_embeddings, attention_mask=None)
    torch.testing.assert_close(got, layer0, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("preset", ["exact", "paper"])
def test_shared_gdn_kv_computes_what_per_head_copies_compute(family, preset):
    """At conversion every per-head k/v copy equals its group's rows, so sharing them changes nothing but
    the parameter count (layer 0 splits group 0 between FA and GDN, layer 1 has a whole group FA)."""
    teacher = make_teacher(family)
    cfg = teacher.config
    plan = HeadPlan(((1,), (2, 3)), cfg.num_attention_heads, cfg.num_key_value_heads)
    copies = hydrahead.convert(teacher, plan, HybridOptions.preset(preset)).eval()
    shared = hydrahead.convert(teacher, plan, HybridOptions.preset(preset, gdn_shared_kv=True)).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 21))
    with torch.no_grad():
        torch.testing.assert_close(shared(ids).logits, copies(ids).logits, rtol=1e-5, atol=1e-5)
    gdn = shared.model.layers[0].self_attn.gdn
    assert gdn.kv_of_head == (0, 1, 1) and gdn.split[1] == 2 * cfg.head_dim  # k rows: heads 0 | 2, 3
    # each layer's GDN heads span one group fewer than they are heads: k and v lose one head's rows
    # (weights, biases) and the conv loses those channels
    D, K = cfg.head_dim, shared.hydrahead_options.conv_size
    bias = D if gdn.qkv_proj.bias is not None else 0
    per_layer = 2 * (D * cfg.hidden_size + bias + D * K)
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert params(copies) - params(shared) == cfg.num_hidden_layers * per_layer


@pytest.mark.parametrize("kwargs, error, message", [
    ({"plan": {"fa_heads": [[0], [2]], "num_heads": 4, "num_kv_heads": 2}}, hydrahead.PlanError, "must be a HeadPlan"),
    ({"options": "paper"}, hydrahead.OptionsError, "must be a HybridOptions"),
    ({"calibration": torch.tensor([[1, 2, 500]])}, hydrahead.OptionsError, "token id 500, outside the model's vocab"),
    ({"calibration": torch.tensor([[-1, 2]])}, hydrahead.OptionsError, "token id -1"),
    ({"calibration": torch.rand(2, 3)}, hydrahead.OptionsError, "torch.int32\\), got a torch.float32"),
    ({"calibration": torch.tensor([[True, False]])}, hydrahead.OptionsError, "got a torch.bool tensor"),  # torch's
    ({"calibration": torch.tensor([[1, 2]], dtype=torch.int8)}, hydrahead.OptionsError, "got a torch.int8"),  # error
    ({"calibration": torch.tensor([1, 2, 3])}, hydrahead.OptionsError, "non-empty \\(B, T\\) .* shape \\(3,\\)"),
    ({"calibration": [[1, 2]]}, hydrahead.OptionsError, "got \\[\\[1, 2\\]\\] \\(a list\\)"),
])
def test_convert_names_an_argument_of_the_wrong_kind(kwargs, error, message):
    """Before: AttributeError ('dict' object has no attribute 'validate'), or an IndexError deep in the embedding."""
    args = {"plan": HeadPlan(((0,), (2,)), 4, 2), **kwargs}
    with pytest.raises(error, match=message):
        hydrahead.convert(make_teacher("qwen3"), **args)
