"""Sample text from a checkpoint with the tokenizer of the shards it was trained on.

    python -m pretrain.generate runs/tiny --prompt "The history of" --max-new-tokens 60

The checkpoint is a run directory (its latest checkpoint), a checkpoints folder, a step_N
folder, or a folder written by `python -m pretrain.export` (its model/ subfolder). Sampling
is temperature + top-k, seeded, on one device; no DeepSpeed engine is built.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

import torch

from pretrain import export
from pretrain.checkpoint import checkpoint_folder
from pretrain.model import GPT


@torch.no_grad()
def sample(model: GPT, prompt: list[int], max_new_tokens: int, temperature: float = 0.8,
           top_k: Optional[int] = 50, generator: Optional[torch.Generator] = None,
           stop_id: Optional[int] = None) -> list[int]:
    """Token ids that follow `prompt` (the context is cut to the model's seq_len)."""
    ids = torch.tensor([prompt], dtype=torch.long, device=next(model.parameters()).device)
    vocab = model.cfg.vocab_size
    out: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(ids[:, -model.cfg.seq_len:])[0, -1, :vocab].float()
        if temperature <= 0:
            nxt = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            nxt = int(torch.multinomial(probs.cpu(), 1, generator=generator))
        if stop_id is not None and nxt == stop_id:
            break
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]], device=ids.device)], dim=1)
    return out


def load(path: str | Path) -> tuple[GPT, Optional[Path], Optional[dict]]:
    """(model, the manifest path, the manifest) for a checkpoint or an exported folder (whose
    tokenizer, if any, sits in the Hugging Face folder beside it: a stand-in manifest)."""
    p = Path(path)
    if (p / "model" / "config.json").is_file():
        p = p / "model"
    if (p / "model.safetensors").is_file() and (p / "config.json").is_file():
        tok = p.parent / "hf" / "tokenizer.json"
        if not tok.is_file():
            return export.load(p), None, None
        hf_config = json.loads((tok.parent / "config.json").read_text())
        manifest = {"tokenizer": {"path": "tokenizer.json", "eod_id": hf_config.get("eos_token_id")}}
        return export.load(p), tok.parent / "manifest.json", manifest
    step_dir = checkpoint_folder(p)
    mcfg, state = export.consolidate(step_dir)
    manifest_path = Path(export.run_config(step_dir).data.manifest)
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
    return export.load_model(mcfg, state), manifest_path, manifest


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pretrain.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="run directory, checkpoints folder, step_N folder or export folder")
    parser.add_argument("--prompt", default="", help="text to continue (default: start of a document)")
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer", type=Path, help="tokenizer.json (default: the training manifest's)")
    args = parser.parse_args(argv)

    from tokenizers import Tokenizer

    model, manifest_path, manifest = load(args.checkpoint)
    tok_path, eod = args.tokenizer, None
    if manifest:
        eod = manifest["tokenizer"].get("eod_id")
        tok_path = tok_path or manifest_path.parent / manifest["tokenizer"]["path"]
    if tok_path is None:
        parser.error("no tokenizer: pass --tokenizer (the checkpoint's manifest is not reachable)")
    tokenizer = Tokenizer.from_file(str(tok_path))
    prompt = tokenizer.encode(args.prompt).ids if args.prompt else []
    if not prompt:
        prompt = [eod if eod is not None else 0]  # a document boundary: start a new document
    generator = torch.Generator().manual_seed(args.seed)
    for i in range(args.num_samples):
        ids = sample(model, prompt, args.max_new_tokens, args.temperature, args.top_k, generator, stop_id=eod)
        text = tokenizer.decode(ids)
        print(f"--- sample {i + 1}\n{args.prompt}{text}", flush=True)


if __name__ == "__main__":
    main()
