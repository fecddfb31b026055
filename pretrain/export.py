"""Export a checkpoint: the ZeRO shards merged into one safetensors file, and a Hugging Face
folder (LlamaForCausalLM: config.json, model.safetensors, the tokenizer) for the LLaMA layout.

    python -m pretrain.export runs/tiny                  # -> runs/tiny/export/{model,hf}/
    python -m pretrain.export runs/tiny/checkpoints/step_00000300 --out /tmp/tiny --no-hf

A checkpoint is given as a run directory (its latest checkpoint), a checkpoints folder, or one
step_N folder. The weights are fp32: DeepSpeed's zero_to_fp32 merges the optimizer's fp32
master shards, whatever the ZeRO stage and world size that wrote them.

Layout notes for the Hugging Face copy: our fused `qkv` rows are q, k, v in that order and our
fused SwiGLU `fc` rows are gate, up; both are split. Our rotary embedding already uses Hugging
Face's "rotate half" pairing (dimension i with i + head_dim/2), so q and k need no permutation.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from pretrain import resume
from pretrain.checkpoint import checkpoint_folder
from pretrain.config import PretrainConfig
from pretrain.model import GPT, ModelConfig


def run_config(step_dir: Path) -> PretrainConfig:
    """The config saved with the checkpoint (or, for older ones, with the run)."""
    for candidate in (step_dir / resume.CONFIG_FILE, step_dir.parent.parent / resume.CONFIG_FILE):
        if candidate.is_file():
            return resume.load(candidate)
    raise FileNotFoundError(f"no {resume.CONFIG_FILE} beside {step_dir}")


def consolidate(step_dir: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(the model's config, its full fp32 state dict; a tied output layer is not repeated)."""
    from pretrain import engine as deepspeed_engine

    cfg = run_config(step_dir)
    state = deepspeed_engine.consolidated_state_dict(step_dir)
    mcfg = replace(cfg.model, vocab_size=state["wte.weight"].shape[0]).resolve()
    if mcfg.tie_embeddings:
        state.pop("lm_head.weight", None)
    return mcfg, {k: v.detach().float().contiguous() for k, v in state.items()}


def load_model(mcfg: ModelConfig, state: dict[str, torch.Tensor]) -> GPT:
    model = GPT(mcfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed = {"lm_head.weight"} if mcfg.tie_embeddings else set()
    if set(missing) - allowed or unexpected:
        raise ValueError(f"state dict does not fit the model: missing {missing}, unexpected {unexpected}")
    return model.eval()


def save(mcfg: ModelConfig, state: dict[str, torch.Tensor], out: Path) -> Path:
    """Our own format: model.safetensors + config.json (the ModelConfig)."""
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(asdict(mcfg), indent=2) + "\n")
    return out


def load(folder: Path) -> GPT:
    """A model saved by `save`."""
    mcfg = ModelConfig(**json.loads((Path(folder) / "config.json").read_text()))
    return load_model(mcfg, load_file(str(Path(folder) / "model.safetensors")))


def hf_llama(mcfg: ModelConfig, state: dict[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config.json for LlamaForCausalLM, its state dict) from ours."""
    c = mcfg.resolve()
    if (c.position, c.norm, c.mlp) != ("rope", "rmsnorm", "swiglu"):
        raise ValueError(
            f"the Hugging Face export writes LlamaForCausalLM, which needs the LLaMA layout "
            f"(rope, rmsnorm, swiglu); this model has {c.position}, {c.norm}, {c.mlp}"
        )
    d, f = c.d_model, c.ffn_dim
    out = {"model.embed_tokens.weight": state["wte.weight"], "model.norm.weight": state["ln_f.weight"]}
    if not c.tie_embeddings:
        out["lm_head.weight"] = state["lm_head.weight"]
    for i in range(c.n_layer):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        out[theirs + "input_layernorm.weight"] = state[ours + "ln_1.weight"]
        out[theirs + "post_attention_layernorm.weight"] = state[ours + "ln_2.weight"]
        for kind in ("weight", "bias") if c.bias else ("weight",):
            qkv = state[f"{ours}attn.qkv.{kind}"]
            for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
                out[f"{theirs}self_attn.{name}.{kind}"] = qkv[j * d:(j + 1) * d]
            out[f"{theirs}self_attn.o_proj.{kind}"] = state[f"{ours}attn.proj.{kind}"]
            fc = state[f"{ours}mlp.fc.{kind}"]
            out[f"{theirs}mlp.gate_proj.{kind}"] = fc[:f]
            out[f"{theirs}mlp.up_proj.{kind}"] = fc[f:]
            out[f"{theirs}mlp.down_proj.{kind}"] = state[f"{ours}mlp.proj.{kind}"]
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": c.padded_vocab(),
        "hidden_size": d,
        "intermediate_size": f,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_head,
        "head_dim": c.head_dim,
        "max_position_embeddings": c.seq_len,
        "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta,  # transformers 4.x
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},  # 5.x
        "hidden_act": "silu",
        "attention_bias": c.bias,
        "mlp_bias": c.bias,
        "tie_word_embeddings": c.tie_embeddings,
        "torch_dtype": "float32",
    }
    return config, {k: v.contiguous() for k, v in out.items()}


def save_hf(mcfg: ModelConfig, state: dict[str, torch.Tensor], out: Path,
            manifest: Optional[dict] = None, manifest_dir: Optional[Path] = None) -> Path:
    """A Hugging Face folder; with the shard manifest, also its tokenizer (tokenizer.json)."""
    config, hf_state = hf_llama(mcfg, state)
    out.mkdir(parents=True, exist_ok=True)
    if manifest:
        tok = manifest["tokenizer"]
        config["bos_token_id"] = config["eos_token_id"] = tok.get("eod_id")
        src = Path(manifest_dir or ".") / tok["path"]
        if src.is_file():
            shutil.copyfile(src, out / "tokenizer.json")
            (out / "tokenizer_config.json").write_text(json.dumps({
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": tok.get("eod_token"), "bos_token": tok.get("eod_token"),
                "model_max_length": mcfg.seq_len,
            }, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(hf_state, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def export(path: str | Path, out: Optional[Path] = None, hf: bool = True) -> dict[str, Path]:
    step_dir = checkpoint_folder(path)
    out = Path(out) if out else step_dir.parent.parent / "export"
    mcfg, state = consolidate(step_dir)
    written = {"model": save(mcfg, state, out / "model")}
    if hf:
        manifest_path = Path(run_config(step_dir).data.manifest)
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
        written["hf"] = save_hf(mcfg, state, out / "hf", manifest, manifest_path.parent)
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pretrain.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="run directory, checkpoints folder or step_N folder")
    parser.add_argument("--out", type=Path, help="output folder (default: <run_dir>/export)")
    parser.add_argument("--no-hf", dest="hf", action="store_false", help="skip the Hugging Face folder")
    args = parser.parse_args(argv)
    for kind, where in export(args.checkpoint, args.out, args.hf).items():
        print(f"{kind}: {where}")


if __name__ == "__main__":
    main()
