"""`sdpa_varlen` attention: the same logits and gradients as sdpa on a packed row, sdpa everywhere else."""

from __future__ import annotations

import torch

from tulu_cli.modeling import attention_implementation
from tulu_cli.varlen_attention import sequence_bounds


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))


def logits_and_grads(model, implementation: str, **inputs):
    model.config._attn_implementation = implementation
    model.zero_grad()
    logits = model(**inputs, use_cache=False).logits
    (logits * torch.linspace(-1, 1, logits.numel()).view_as(logits)).sum().backward()
    return logits.detach(), [p.grad.clone() for p in model.parameters()]


def test_packed_row_matches_sdpa_block_mask_in_logits_and_gradients():
    model = tiny_llama()
    lengths = [5, 9, 3, 7]
    ids = torch.randint(0, 64, (1, sum(lengths)), generator=torch.Generator().manual_seed(1))
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    assert sequence_bounds(positions) == [0, 5, 14, 17, 24]
    varlen = attention_implementation("sdpa_varlen")
    expected, expected_grads = logits_and_grads(model, "sdpa", input_ids=ids, position_ids=positions)
    got, grads = logits_and_grads(model, varlen, input_ids=ids, position_ids=positions)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for grad, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, want, rtol=1e-4, atol=1e-5)
    # Attention stays inside each sequence: the last sequence alone gives its logits.
    alone, _ = logits_and_grads(model, varlen, input_ids=ids[:, 17:], position_ids=positions[:, 17:])
    torch.testing.assert_close(got[:, 17:], alone, rtol=1e-5, atol=1e-5)


def test_padded_batches_and_generation_are_plain_sdpa():
    model = tiny_llama().eval()
    varlen = attention_implementation("sdpa_varlen")
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]])  # left padding, as generation batches are
    with torch.no_grad():
        model.config._attn_implementation = "sdpa"
        expected = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
        expected_logits = model(input_ids=ids, attention_mask=mask).logits
        model.config._attn_implementation = varlen
        got = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
        got_logits = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(got, expected)
    torch.testing.assert_close(got_logits, expected_logits)
    assert sequence_bounds(torch.arange(6)[None]) is None  # one sequence: nothing to split
