"""A lean decoding forward for Qwen3-architecture models (the tiny coder, Qwen3-4B/8B), for sampling on CPU.

On a small model each decoding step costs what its Python and its ~30 small tensor ops per layer cost,
not what its arithmetic costs. This decoder runs the same computation as transformers' ``Qwen3ForCausalLM``
(RMSNorm on the hidden state and on each query and key head, rotary positions, grouped-query attention,
SwiGLU MLP, tied or untied LM head) with fewer, fused ops: one matmul for q, k and v, one for the gate and
the up projection, the query and key heads normed and rotated together, ``F.rms_norm``, and a KV cache
written in place into buffers sized for the whole response (no concatenation per step). Its logits match
the model's own to float rounding (tested); it reads the model's live weights at each
:meth:`Qwen3Decoder.prefill`, so it always samples from the current policy. Models it does not cover
(see :func:`supports`) decode through transformers.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def supports(model: Any) -> bool:
    """A plain Qwen3 causal LM: no attention bias, SiLU, default RoPE, no sliding window, whole weights."""
    cfg = getattr(model, "config", None)
    inner = getattr(model, "model", None)
    if cfg is None or inner is None or getattr(cfg, "model_type", None) != "qwen3":
        return False
    rotary = getattr(inner, "rotary_emb", None)
    plain = (
        not getattr(cfg, "attention_bias", False) and getattr(cfg, "hidden_act", None) == "silu"
        and not getattr(cfg, "use_sliding_window", False) and getattr(rotary, "rope_type", None) == "default"
        and hasattr(F, "rms_norm")
    )  # fmt: skip
    # ZeRO-3 partitions parameters (empty placeholders outside a gather): leave those to transformers
    return plain and not any(hasattr(p, "ds_id") for p in model.parameters())


class _Layer:
    def __init__(self, layer: Any, heads: int, kv_heads: int) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.ln1, self.ln2 = layer.input_layernorm.weight, layer.post_attention_layernorm.weight
        q_norm, k_norm = attn.q_norm.weight.expand(heads, -1), attn.k_norm.weight.expand(kv_heads, -1)
        self.qk_norm = torch.cat([q_norm, k_norm])  # (heads + kv_heads, D): per-head RMSNorm weights
        self.qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])  # (Q+2K, H)
        self.o = attn.o_proj.weight  # (H, Q)
        self.gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])  # (2I, H)
        self.down = mlp.down_proj.weight  # (H, I)


class Qwen3Decoder:
    """:meth:`prefill` the prompts, then :meth:`step` one token per running row; :meth:`keep` drops rows."""

    def __init__(self, model: Any) -> None:
        cfg = model.config
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.model = model

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, attention: torch.Tensor, n: int, max_new: int) -> torch.Tensor:
        """Encode left-padded prompts (P, L) once; returns the next-token logits of each of the P*n rows."""
        self._read_weights()
        p, width = input_ids.shape
        size, dtype = (p, self.kv_heads, width, self.head_dim), self.embed.dtype
        self.keys = [input_ids.new_zeros(size, dtype=dtype) for _ in self.layers]
        self.values = [input_ids.new_zeros(size, dtype=dtype) for _ in self.layers]
        self.length, self.capacity = 0, width
        valid = attention.bool()  # (P, L)
        causal = torch.ones((width, width), dtype=torch.bool, device=input_ids.device).tril()
        eye = torch.eye(width, dtype=torch.bool, device=input_ids.device)
        mask = (causal & valid[:, None, :]) | eye  # a padding query sees itself: no empty row (NaN)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)  # (P, L)
        logits = self._forward(input_ids, positions, mask[:, None], 0)  # (P, V)
        rows = torch.arange(p, device=input_ids.device).repeat_interleave(n)  # (B,) each prompt n times
        self.length, self.capacity = width, width + max_new
        self._take(rows)
        self.valid = torch.cat([valid, valid.new_ones((p, max_new))], dim=-1)[rows]  # (B, L + max_new)
        self.next_pos = attention.sum(-1, keepdim=True)[rows]  # (B, 1)
        return logits[rows]

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per running row (b, 1); returns the next-token logits (b, V)."""
        mask = self.valid[:, None, None, : self.length + 1]  # (b, 1, 1, T)
        logits = self._forward(tokens, self.next_pos, mask, self.length)
        self.next_pos = self.next_pos + 1
        self.length += 1
        return logits

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (indices into the running rows) from now on."""
        self._take(rows)
        self.valid, self.next_pos = self.valid[rows], self.next_pos[rows]

    def _take(self, rows: torch.Tensor) -> None:
        """New cache buffers of ``capacity`` positions for ``rows``, holding their keys and values so far
        (only those are copied; later positions are written by :meth:`step` before anything reads them)."""

        def take(buf: torch.Tensor) -> torch.Tensor:
            out = buf.new_empty((len(rows), buf.shape[1], self.capacity, buf.shape[3]))
            out[:, :, : self.length] = buf[:, :, : self.length].index_select(0, rows)
            return out

        self.keys, self.values = [take(k) for k in self.keys], [take(v) for v in self.values]

    def _read_weights(self) -> None:
        """The model's current weights (fused where one matmul can do the work of several)."""
        inner = self.model.model
        self.embed, self.norm = inner.embed_tokens.weight, inner.norm.weight
        self.head = self.model.lm_head.weight
        self.inv_freq, self.rope_scale = inner.rotary_emb.inv_freq.float(), inner.rotary_emb.attention_scaling
        self.layers = [_Layer(layer, self.heads, self.kv_heads) for layer in inner.layers]

    def _rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and a signed sin (b, 1, s, D): ``x * cos + x.roll(D/2, -1) * sin`` rotates ``x`` as
        transformers' ``x * cos + rotate_half(x) * sin`` does."""
        freqs = positions[..., None].float() * self.inv_freq  # (b, s, D/2)
        cos, sin = freqs.cos() * self.rope_scale, freqs.sin() * self.rope_scale
        return torch.cat((cos, cos), dim=-1)[:, None].to(dtype), torch.cat((-sin, sin), dim=-1)[:, None].to(
            dtype
        )

    def _forward(
        self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, start: int
    ) -> torch.Tensor:
        b, s = ids.shape
        hq, hk, d = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.head_dim
        h = F.embedding(ids, self.embed)  # (b, s, H)
        cos, sin = self._rope(positions, h.dtype)
        for i, layer in enumerate(self.layers):
            x = F.rms_norm(h, h.shape[-1:], layer.ln1, self.eps)
            qk, v = F.linear(x, layer.qkv).split([hq + hk, hk], dim=-1)
            qk = F.rms_norm(qk.view(b, s, -1, d), (d,), None, self.eps).mul_(layer.qk_norm).transpose(1, 2)
            qk = qk * cos + qk.roll(d // 2, -1) * sin  # (b, heads + kv_heads, s, D), rotated
            q, k = qk[:, : self.heads], qk[:, self.heads :]
            self.keys[i][:, :, start : start + s] = k
            self.values[i][:, :, start : start + s] = v.view(b, s, self.kv_heads, d).transpose(1, 2)
            keys, values = self.keys[i][:, :, : start + s], self.values[i][:, :, : start + s]
            a = F.scaled_dot_product_attention(
                q, keys, values, attn_mask=mask, scale=d**-0.5, enable_gqa=True
            )
            h = h + F.linear(a.transpose(1, 2).reshape(b, s, hq), layer.o)
            gate, up = F.linear(F.rms_norm(h, h.shape[-1:], layer.ln2, self.eps), layer.gate_up).chunk(2, -1)
            h = h + F.linear(F.silu(gate) * up, layer.down)
        last = F.rms_norm(h[:, -1], h.shape[-1:], self.norm, self.eps)  # (b, H)
        return F.linear(last, self.head).float()  # (b, V)
