"""Chunked token log-probs: the same values and gradients as a full float32 log-softmax."""

from __future__ import annotations

import pytest
import torch

from tulu_cli.data.chat import IGNORE_INDEX
from tulu_cli.train import logprobs as logprobs_module
from tulu_cli.train.logprobs import LabelledColumns, token_logprobs
from tulu_cli.train.rl.sequences import response_positions


def full_logsoftmax_logprobs(logits, labels, temperature=1.0):
    """The straightforward version: a float32 copy of all logits, log-softmax, gather."""
    shifted = labels[:, 1:]
    mask = shifted != IGNORE_INDEX
    full = logits[:, :-1].float() / temperature
    picked = torch.gather(full, 2, shifted.masked_fill(~mask, 0).unsqueeze(-1)).squeeze(-1)
    return (picked - torch.logsumexp(full, dim=-1)) * mask, mask


def random_batch(dtype, rows=3, length=11, vocab=50, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, length, vocab, generator=generator) * 3).to(dtype)
    labels = torch.randint(0, vocab, (rows, length), generator=generator)
    labels[0, :4] = IGNORE_INDEX  # a prompt
    labels[1, -3:] = IGNORE_INDEX  # padding
    labels[-1, 5] = IGNORE_INDEX  # a packed sequence boundary
    return logits, labels


@pytest.fixture
def small_chunks(monkeypatch):
    # 2 positions of a 50-token vocabulary per chunk: every batch spans many chunks.
    monkeypatch.setattr(logprobs_module, "CHUNK_ELEMENTS", 100)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 1e-5)])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_values_and_gradients_match_the_full_logsoftmax(small_chunks, dtype, tolerance, temperature):
    logits, labels = random_batch(dtype)
    upstream = torch.randn(labels.shape[0], labels.shape[1] - 1, generator=torch.Generator().manual_seed(1))

    expected_input = logits.clone().requires_grad_(True)
    expected, expected_mask = full_logsoftmax_logprobs(expected_input, labels, temperature)
    (expected * upstream).sum().backward()

    chunked_input = logits.clone().requires_grad_(True)
    chunked, mask = token_logprobs(chunked_input, labels, temperature)
    (chunked * upstream).sum().backward()

    assert chunked.dtype == torch.float32 and chunked.shape == expected.shape
    assert torch.equal(mask, expected_mask)
    torch.testing.assert_close(chunked, expected, rtol=tolerance, atol=tolerance)
    # Gradients come back in the logits' dtype, as autograd does for the full version.
    assert chunked_input.grad.dtype == dtype
    torch.testing.assert_close(chunked_input.grad.float(), expected_input.grad.float(), rtol=1e-2 if
                               dtype == torch.bfloat16 else 1e-5, atol=1e-2 if dtype == torch.bfloat16 else 1e-6)
    assert torch.all(chunked[~mask] == 0)


def test_gradient_of_a_model_matches_through_the_chunked_path(small_chunks, tiny_model_factory, tiny_tokenizer):
    """End to end through a real model: parameter gradients of the summed log-probs agree."""
    ids = torch.tensor([tiny_tokenizer.encode("Tom has 3 apples and buys 4 more. How many now?")])
    labels = ids.clone()
    labels[0, :5] = IGNORE_INDEX
    grads = []
    for compute in (full_logsoftmax_logprobs, token_logprobs):
        model = tiny_model_factory(seed=1)
        values, _ = compute(model(input_ids=ids).logits, labels)
        values.sum().backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_entropy_at_response_positions_matches_the_full_computation(small_chunks):
    logits, labels = random_batch(torch.float32)
    positions = response_positions(labels)
    full = torch.log_softmax(logits[:, :-1][positions] / 0.7, dim=-1)
    expected = -(full.exp() * full).sum(-1)
    torch.testing.assert_close(LabelledColumns.of(labels, keep=False).entropy(logits, 0.7), expected)
    kept = LabelledColumns.of(labels)
    torch.testing.assert_close(kept.entropy(logits.index_select(1, kept.columns), 0.7), expected)


def test_no_full_float32_copy_is_made_of_bfloat16_logits(monkeypatch):
    """The largest float32 tensor built is one chunk, not the [rows, positions, vocab] logits."""
    logits, labels = random_batch(torch.bfloat16, rows=2, length=64, vocab=1000)
    monkeypatch.setattr(logprobs_module, "CHUNK_ELEMENTS", 8 * 1000)
    largest = 0
    original_float = torch.Tensor.float

    def recording_float(self):
        nonlocal largest
        result = original_float(self)
        if self.dtype != torch.float32:
            largest = max(largest, result.numel())
        return result

    monkeypatch.setattr(torch.Tensor, "float", recording_float)
    values, _ = token_logprobs(logits.requires_grad_(True), labels)
    values.sum().backward()
    assert 0 < largest <= 8 * 1000
