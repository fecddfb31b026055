import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO
from pretrain.config import register
from pretrain.model import GPT, STYLES, ModelConfig

register()


def tiny(**kw) -> ModelConfig:
    return ModelConfig(**{"n_layer": 2, "n_head": 4, "d_model": 32, "seq_len": 16, "vocab_size": 100, **kw})


def test_logits_shape_and_padded_vocab():
    model = GPT(tiny())
    x = torch.randint(0, 100, (3, 16))
    logits = model(x)
    assert logits.shape == (3, 16, 128)  # 100 padded up to a multiple of 64
    _, loss = model(x, x)
    assert loss.ndim == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("style", sorted(STYLES))
def test_attention_is_causal(style):
    torch.manual_seed(0)
    model = GPT(tiny(style=style)).eval()
    x = torch.randint(0, 100, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 100  # change only the future of position 9
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-6)
    assert not torch.allclose(a[0, 10:], b[0, 10:])


@pytest.mark.parametrize("style", sorted(STYLES))
def test_untrained_loss_is_near_uniform(style):
    torch.manual_seed(0)
    model = GPT(tiny(vocab_size=1000, pad_vocab_to=1, style=style))
    x, y = torch.randint(0, 1000, (2, 4, 16))
    _, loss = model(x, y)
    assert abs(loss.item() - torch.log(torch.tensor(1000.0)).item()) < 0.3


def test_gpt3_small_parameter_count():
    # GPT-3 paper, Table 2.1: "GPT-3 Small" has 125M parameters (vocab 50257, context 2048).
    with torch.device("meta"):
        model = GPT(ModelConfig(n_layer=12, n_head=12, d_model=768, seq_len=2048, vocab_size=50257,
                                pad_vocab_to=1, style="gpt2"))
    n = model.num_params(exclude_positions=False)
    assert abs(n - 125e6) / 125e6 < 0.01, n


def test_sequence_longer_than_context_is_an_error():
    with pytest.raises(ValueError, match="seq_len"):
        GPT(tiny())(torch.zeros(1, 17, dtype=torch.long))


def test_tied_embeddings_share_storage():
    model = GPT(tiny())
    assert model.lm_head.weight is model.wte.weight
    untied = GPT(tiny(tie_embeddings=False))
    assert untied.num_params() > model.num_params()


# GPT-3 paper, Table 2.1 (vocabulary 50257, context 2048, tied embeddings).
PAPER_PARAMS = {"125m": 125e6, "350m": 350e6, "760m": 760e6, "1.3b": 1.3e9, "2.7b": 2.7e9, "6.7b": 6.7e9}


@pytest.mark.parametrize("style", sorted(STYLES))
@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_shipped_sizes_match_the_gpt3_paper(name, style):
    """conf/model/<name>.yaml, built on the meta device (no memory), in either layout."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = compose("pretrain", [f"model={name}", f"model.style={style}", "model.vocab_size=50257",
                                   "model.pad_vocab_to=1"])
    with torch.device("meta"):
        model = GPT(OmegaConf.to_object(cfg).model)
    n = model.num_params(exclude_positions=False)
    assert abs(n - PAPER_PARAMS[name]) / PAPER_PARAMS[name] < 0.02, (name, style, n)


def test_style_sets_the_layout_and_single_pieces_override_it():
    llama = GPT(tiny()).cfg
    assert (llama.position, llama.norm, llama.mlp, llama.bias) == ("rope", "rmsnorm", "swiglu", False)
    gpt2 = GPT(tiny(style="gpt2"))
    assert (gpt2.cfg.position, gpt2.cfg.norm, gpt2.cfg.mlp, gpt2.cfg.bias) == ("learned", "layernorm", "gelu", True)
    assert gpt2.wpe is not None and GPT(tiny()).wpe is None
    mixed = GPT(tiny(style="gpt2", position="rope")).cfg
    assert (mixed.position, mixed.norm) == ("rope", "layernorm")
    # SwiGLU's three matrices at 8/3·d hold as many weights as GELU's two at 4·d.
    assert GPT(tiny(d_model=96, n_head=4)).cfg.ffn_dim == 256  # 8/3·96 = 256
    with pytest.raises(ValueError, match="model.norm"):
        tiny(norm="batchnorm")


def test_rope_attention_depends_on_relative_position_only():
    """Giving the same tokens other absolute positions (shifted position tables) leaves the
    logits unchanged with rotary positions, and changes them with learned ones."""
    torch.manual_seed(0)
    x = torch.randint(0, 100, (1, 8))
    for style, invariant in (("llama", True), ("gpt2", False)):
        model = GPT(tiny(style=style)).eval()
        with torch.no_grad():
            a = model(x)
            if style == "llama":
                model.rope_cos, model.rope_sin = (t.roll(-5, dims=0) for t in (model.rope_cos, model.rope_sin))
            else:
                model.wpe.weight.data = model.wpe.weight.data.roll(-5, dims=0)
            b = model(x)
        assert torch.allclose(a, b, atol=1e-5) == invariant, style


@pytest.mark.parametrize("style", sorted(STYLES))
def test_activation_checkpointing_gives_the_same_gradients(style):
    torch.manual_seed(0)
    plain = GPT(tiny(style=style))
    ckpt = GPT(tiny(style=style, activation_checkpointing=True))
    ckpt.load_state_dict(plain.state_dict())
    x, y = torch.randint(0, 100, (2, 3, 16))
    for m in (plain, ckpt):
        m(x, y)[1].backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


def test_flops_per_token_formula():
    c = tiny(vocab_size=128)
    tied, untied = GPT(c), GPT(tiny(vocab_size=128, tie_embeddings=False))
    attention = 12 * c.n_layer * c.d_model * c.seq_len
    assert tied.flops_per_token() == 6 * tied.num_params() + attention
    # The input embedding is a lookup: untied, it adds no FLOPs.
    assert untied.flops_per_token() == tied.flops_per_token()
    assert math.isclose(untied.num_params() - tied.num_params(), 128 * c.d_model)


def test_compiled_blocks_compute_the_same_and_keep_their_names():
    """train.compile compiles each block in place: same loss and gradients, same state dict keys
    (so checkpoints move between compiled and eager runs). aot_eager traces like Inductor
    without its minutes of C++ compilation on a CPU."""
    from pretrain.engine import compile_blocks

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=256, seq_len=32)
    eager, compiled = GPT(cfg), GPT(cfg)
    compiled.load_state_dict(eager.state_dict())
    compile_blocks(compiled, backend="aot_eager")
    x, y = torch.randint(0, 256, (2, 32)), torch.randint(0, 256, (2, 32))
    a, b = eager(x, y)[1], compiled(x, y)[1]
    a.backward(), b.backward()
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(eager.blocks[0].attn.qkv.weight.grad, compiled.blocks[0].attn.qkv.weight.grad, atol=1e-6)
    assert list(compiled.state_dict()) == list(eager.state_dict())


def test_fused_adamw_on_cuda_only():
    from pretrain.engine import fused_adamw

    assert fused_adamw("cuda") is True and fused_adamw("cpu") is False
