"""Our model -> one safetensors file and a Hugging Face LlamaForCausalLM folder, same logits."""

import pytest
import torch

from pretrain import export, generate
from pretrain.model import GPT, ModelConfig

transformers = pytest.importorskip("transformers")


def tiny(**kw) -> ModelConfig:
    return ModelConfig(**{"n_layer": 2, "n_head": 4, "d_model": 64, "seq_len": 32, "vocab_size": 200, **kw})


def _trained_looking(model: GPT) -> GPT:
    # Random norm gains and biases too, so a misplaced one cannot hide behind ones and zeros.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) or name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.1 + (0 if name.endswith("bias") else 1))
    return model.eval()


@pytest.mark.parametrize("kw", [{}, {"tie_embeddings": False}, {"bias": True, "rope_theta": 500.0}])
def test_hugging_face_llama_gives_our_logits(tmp_path, kw):
    torch.manual_seed(0)
    model = _trained_looking(GPT(tiny(**kw)))
    state = {k: v for k, v in model.state_dict().items() if not (model.cfg.tie_embeddings and k == "lm_head.weight")}
    export.save_hf(model.cfg, state, tmp_path / "hf")
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    x = torch.randint(0, 200, (2, 32))
    with torch.no_grad():
        ours, theirs = model(x), hf(x).logits
    assert theirs.shape == ours.shape
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


def test_our_safetensors_file_round_trips(tmp_path):
    torch.manual_seed(0)
    model = _trained_looking(GPT(tiny()))
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied
    export.save(model.cfg, state, tmp_path / "model")
    again = export.load(tmp_path / "model")
    assert again.lm_head.weight is again.wte.weight
    x = torch.randint(0, 200, (1, 32))
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_gpt2_layout_is_not_exported_as_llama():
    model = GPT(tiny(style="gpt2"))
    with pytest.raises(ValueError, match="LLaMA layout"):
        export.hf_llama(model.cfg, model.state_dict())


def test_greedy_sampling_is_the_argmax_chain():
    torch.manual_seed(0)
    model = GPT(tiny()).eval()
    out = generate.sample(model, [1, 2, 3], 5, temperature=0)
    ids = [1, 2, 3]
    with torch.no_grad():
        for _ in range(5):
            ids.append(int(model(torch.tensor([ids]))[0, -1, :200].argmax()))
    assert out == ids[3:]
    g = torch.Generator().manual_seed(1)
    sampled = generate.sample(model, [1], 40, temperature=1.0, top_k=5, generator=g)
    assert len(sampled) == 40 and all(0 <= t < 200 for t in sampled)
