import pytest
import torch

from pretrain.model import GPT, ModelConfig


def tiny(**kw) -> ModelConfig:
    return ModelConfig(**{"n_layer": 2, "n_head": 4, "d_model": 32, "seq_len": 16, "vocab_size": 100, **kw})


def test_logits_shape_and_padded_vocab():
    model = GPT(tiny())
    x = torch.randint(0, 100, (3, 16))
    logits = model(x)
    assert logits.shape == (3, 16, 128)  # 100 padded up to a multiple of 64
    _, loss = model(x, x)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_attention_is_causal():
    torch.manual_seed(0)
    model = GPT(tiny()).eval()
    x = torch.randint(0, 100, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 100  # change only the future of position 9
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-6)
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_untrained_loss_is_near_uniform():
    torch.manual_seed(0)
    model = GPT(tiny(vocab_size=1000, pad_vocab_to=1))
    x, y = torch.randint(0, 1000, (2, 4, 16))
    _, loss = model(x, y)
    assert abs(loss.item() - torch.log(torch.tensor(1000.0)).item()) < 0.3


def test_gpt3_small_parameter_count():
    # GPT-3 paper, Table 2.1: "GPT-3 Small" has 125M parameters (vocab 50257, context 2048).
    with torch.device("meta"):
        model = GPT(ModelConfig(n_layer=12, n_head=12, d_model=768, seq_len=2048, vocab_size=50257, pad_vocab_to=1))
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
