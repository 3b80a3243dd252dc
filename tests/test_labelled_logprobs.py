"""`labelled_logprobs` runs the output layer only where a label is predicted, and gives the log-probs
and gradients of the whole-logits path (`token_logprobs(forward_logits(...))`): packed and padded
batches, a sampling temperature, a LoRA-wrapped model, and a model without `logits_to_keep`."""

from __future__ import annotations

import torch

from tests.test_packing import examples
from tulu_cli.train.batching import collate
from tulu_cli.train.logprobs import forward_logits, keeps_chosen_logits, labelled_logprobs, token_logprobs


def logprobs_and_grads(model, compute) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    logprobs, mask = compute()
    # Weigh positions differently so that a misplaced log-prob changes the gradient.
    weights = torch.linspace(0.5, 1.5, logprobs.numel()).view(logprobs.shape)
    (-(logprobs * weights).sum()).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return logprobs.detach(), mask, grads


def rows_seen_by_output_layer(model, compute) -> int:
    seen = []
    handle = model.get_output_embeddings().register_forward_hook(
        lambda module, inputs, output: seen.append(inputs[0].shape[:-1].numel()))
    try:
        compute()
    finally:
        handle.remove()
    return sum(seen)


def assert_same(model, batch, temperature: float = 1.0) -> None:
    full = logprobs_and_grads(model, lambda: token_logprobs(forward_logits(model, batch), batch["labels"], temperature))
    kept = logprobs_and_grads(model, lambda: labelled_logprobs(model, batch, temperature=temperature))
    assert torch.equal(full[1], kept[1])
    torch.testing.assert_close(kept[0], full[0], rtol=1e-5, atol=1e-5)
    assert full[2].keys() == kept[2].keys()
    for name, grad in full[2].items():
        torch.testing.assert_close(kept[2][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_packed_and_padded_batches_match_the_whole_logits_path(tiny_tokenizer, tiny_model_factory):
    model = tiny_model_factory()
    rows = examples(tiny_tokenizer, 5)
    for packing in (True, False):
        batch = collate(rows, tiny_tokenizer.pad_token_id, packing=packing)
        assert_same(model, batch)
        tokens = batch["input_ids"].numel()
        kept = rows_seen_by_output_layer(model, lambda b=batch: labelled_logprobs(model, b))
        # Prompt (and padding) positions are skipped: the tiny SFT rows are mostly prompt.
        assert kept < 0.8 * tokens, (packing, kept, tokens)
    assert_same(model, collate(rows, tiny_tokenizer.pad_token_id, packing=True), temperature=0.7)


def test_a_row_with_no_labels_and_a_lora_wrapper(tiny_tokenizer, tiny_model_factory):
    from peft import LoraConfig, get_peft_model

    rows = examples(tiny_tokenizer, 3)
    rows[1] = {**rows[1], "labels": [-100] * len(rows[1]["labels"])}
    model = get_peft_model(tiny_model_factory(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    assert keeps_chosen_logits(model)
    assert_same(model, collate(rows, tiny_tokenizer.pad_token_id, packing=False))


class WithoutLogitsToKeep(torch.nn.Module):
    """A causal LM whose forward takes no `logits_to_keep` (older transformers, custom models)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)

    def get_output_embeddings(self):
        return self.model.get_output_embeddings()


def test_a_model_without_logits_to_keep_computes_every_position(tiny_tokenizer, tiny_model_factory):
    model = WithoutLogitsToKeep(tiny_model_factory())
    assert not keeps_chosen_logits(model)
    batch = collate(examples(tiny_tokenizer, 3), tiny_tokenizer.pad_token_id, packing=True)
    assert_same(model, batch)
    assert rows_seen_by_output_layer(model, lambda: labelled_logprobs(model, batch)) == batch["input_ids"].numel()
