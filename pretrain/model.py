"""A decoder-only transformer, written for one device.

Two layouts from one config: LLaMA's (rotary positions, RMSNorm, SwiGLU, no biases; the
default) and GPT-2/3's (learned positions, LayerNorm, GELU, biases). `style` picks the set;
each piece can also be chosen on its own (`position`, `norm`, `mlp`, `bias`).

No distributed code lives here: DeepSpeed wraps the module from outside (pretrain/engine.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

STYLES = {
    "llama": {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False},
    "gpt2": {"position": "learned", "norm": "layernorm", "mlp": "gelu", "bias": True},
}


@dataclass
class ModelConfig:
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 128
    seq_len: int = 128
    # None: taken from the tokenizer recorded in the shard manifest.
    vocab_size: Optional[int] = None
    # Embedding rows are padded to a multiple of this (faster matmuls); padded ids are never used.
    pad_vocab_to: int = 64
    dropout: float = 0.0
    # llama | gpt2: the defaults of the four keys below (None: the style's choice).
    style: str = "llama"
    position: Optional[str] = None  # rope | learned
    norm: Optional[str] = None  # rmsnorm | layernorm
    mlp: Optional[str] = None  # swiglu | gelu
    bias: Optional[bool] = None
    # MLP hidden width; None: 4·d (gelu), or 8/3·d rounded up to ffn_multiple_of (swiglu, the
    # same parameter count as 4·d GELU).
    ffn_dim: Optional[int] = None
    ffn_multiple_of: int = 64
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    # Recompute each block's activations in the backward pass (less memory, ~1/3 more compute).
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"model.style must be one of {', '.join(STYLES)}, not {self.style!r}")
        for key, allowed in (("position", ("rope", "learned")), ("norm", ("rmsnorm", "layernorm")),
                             ("mlp", ("swiglu", "gelu"))):
            value = getattr(self, key)
            if value is not None and value not in allowed:
                raise ValueError(f"model.{key} must be one of {', '.join(allowed)}, not {value!r}")
        if self.d_model % self.n_head:
            raise ValueError(f"model.d_model={self.d_model} is not divisible by model.n_head={self.n_head}")

    def resolve(self) -> "ModelConfig":
        """A copy with the style's choices and the MLP width filled in (the config stays as
        written, so that `model.style=gpt2` on the command line switches all four pieces)."""
        filled = {k: v for k, v in STYLES[self.style].items() if getattr(self, k) is None}
        c = replace(self, **filled)
        if c.ffn_dim is None:
            m = max(1, c.ffn_multiple_of)
            c.ffn_dim = 4 * c.d_model if c.mlp == "gelu" else m * math.ceil(8 * c.d_model / 3 / m)
        if c.position == "rope" and c.head_dim % 2:
            raise ValueError("rotary positions need an even head dimension (d_model / n_head)")
        return c

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def padded_vocab(self) -> int:
        if self.vocab_size is None:
            raise ValueError("model.vocab_size is not set (it is normally read from the manifest)")
        m = max(1, self.pad_vocab_to)
        return ((self.vocab_size + m - 1) // m) * m


def rope_tables(cfg: ModelConfig, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (seq_len, head_dim), in the "rotate half" layout (Hugging Face Llama):
    dimension i and i + head_dim/2 form one rotated pair, with frequency theta^(-2i/head_dim)."""
    half = cfg.head_dim // 2
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, half, device=device, dtype=torch.float32) / half))
    angles = torch.outer(torch.arange(cfg.seq_len, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (batch, heads, time, head_dim); cos, sin: (time, head_dim)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        # One matmul for q, k, v: rows [0, d) are q, [d, 2d) k, [2d, 3d) v.
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, rope: Optional[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        if rope is not None:
            cos, sin = rope
            q, k = apply_rope(q, cos[:t], sin[:t]), apply_rope(k, cos[:t], sin[:t])
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, c))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.swiglu = cfg.mlp == "swiglu"
        # SwiGLU: one matmul for gate and up, rows [0, ffn) gate, [ffn, 2·ffn) up.
        self.fc = nn.Linear(cfg.d_model, (2 if self.swiglu else 1) * cfg.ffn_dim, bias=cfg.bias)
        self.proj = nn.Linear(cfg.ffn_dim, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            gate, up = self.fc(x).chunk(2, dim=-1)
            return self.proj(F.silu(gate) * up)
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = make_norm(cfg)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rope=None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln_1(x), rope))
        return x + self.drop(self.mlp(self.ln_2(x)))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg = cfg.resolve()
        vocab = cfg.padded_vocab()
        self.wte = nn.Embedding(vocab, cfg.d_model)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.d_model) if cfg.position == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = make_norm(cfg)
        self.lm_head = nn.Linear(cfg.d_model, vocab, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        if cfg.position == "rope":
            # Buffers, not parameters: recomputed here, never trained, not saved.
            cos, sin = rope_tables(cfg)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer).
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None):
        """Logits for `idx` (batch, time); with `targets`, the mean next-token cross-entropy."""
        t = idx.shape[1]
        if t > self.cfg.seq_len:
            raise ValueError(f"sequence of {t} tokens exceeds model.seq_len={self.cfg.seq_len}")
        x = self.wte(idx)
        rope = None
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(t, device=idx.device))
        else:
            rope = (self.rope_cos, self.rope_sin)
        x = self.drop(x)
        for block in self.blocks:
            if self.cfg.activation_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, rope, use_reentrant=False)
            else:
                x = block(x, rope)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def num_params(self, exclude_positions: bool = True) -> int:
        """Parameters counted once (tied weights once); position embeddings excluded by default."""
        n = sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())
        if exclude_positions and self.wpe is not None:
            n -= self.wpe.weight.numel()
        return n

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6N + 12·L·d·T (PaLM appendix B; full, not causal-halved,
        attention scores). N counts the matmul weights: every parameter except the input
        embeddings (a lookup, no FLOPs) and position embeddings; the output projection counts,
        so a tied embedding counts once."""
        c = self.cfg
        n = self.num_params()
        if not c.tie_embeddings:
            n -= self.wte.weight.numel()
        return 6 * n + 12 * c.n_layer * c.d_model * c.seq_len
