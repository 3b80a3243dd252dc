"""`sdpa_varlen` attention: on a packed row (one row of several sequences, position ids restarting at
each), sdpa runs once per sequence with a causal mask instead of once over the whole row under a
block-diagonal mask.

Plain sdpa on a packed row of length L computes and masks L x L scores (and builds an L x L mask);
per sequence it computes only the sum of each sequence's length squared, what flash-attention's
varlen kernel does on GPUs. Anything else (generation with a cache, padded batches) is plain sdpa.
"""

from __future__ import annotations

import torch

NAME = "sdpa_varlen"


def register() -> str:
    """Make `NAME` an attention implementation transformers models accept; return it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, varlen_sdpa_forward)
    # Masks as for sdpa: padded batches and generation need them; a packed row's is not used.
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def sequence_bounds(position_ids: torch.Tensor | None) -> list[int] | None:
    """[0, start of the 2nd sequence, ..., L] of a packed row; None when the input is not one packed row."""
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[0] != 1:
        return None
    starts = (position_ids[0] == 0).nonzero().flatten().tolist()
    if len(starts) < 2 or starts[0] != 0:
        return None
    return [*starts, position_ids.shape[1]]


def varlen_sdpa_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                        **kwargs) -> tuple[torch.Tensor, None]:
    """query/key/value [batch, heads, length, head_dim] -> ([batch, length, heads, head_dim], None)."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    bounds = sequence_bounds(kwargs.get("position_ids"))
    if bounds is None or query.shape[2] != key.shape[2] or not getattr(module, "is_causal", True):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    parts = [
        torch.nn.functional.scaled_dot_product_attention(query[:, :, start:end], key[:, :, start:end],
                                                         value[:, :, start:end], dropout_p=dropout, scale=scaling,
                                                         is_causal=True)
        for start, end in zip(bounds, bounds[1:], strict=False)
    ]
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None
