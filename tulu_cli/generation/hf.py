"""Hugging Face `generate` backend: left-padded batches, sampling or greedy, on CPU or GPU."""

from __future__ import annotations

import torch

from tulu_cli.generation.base import Completion, Prompts, SamplingConfig, prompt_token_ids
from tulu_cli.progress import Bar


class HFBackend:
    """`synced_gpus=True` when the model is sharded (ZeRO-3): every rank must then call `generate`
    with the same number of batches, and each keeps running forward passes until all have finished."""

    def __init__(self, model, tokenizer, batch_size: int = 32, synced_gpus: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.synced_gpus = synced_gpus

    def load_weights(self, weights) -> None:
        """vLLM's model interface: copy each (name, full tensor) into the parameter of that name."""
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, tensor in weights:
                if name not in params:
                    raise KeyError(f"generation model has no parameter {name!r}")
                params[name].copy_(tensor)

    def update_weights(self, metadata, named_params) -> None:
        from tulu_cli.train.rl.weight_sync import load_parameter_by_parameter

        load_parameter_by_parameter(self, named_params)

    def prompt_logprobs(self, prompts: list[list[int]]) -> list[list[float]]:
        from tulu_cli.train.logprobs import prompt_token_logprobs

        return prompt_token_logprobs(self.model, prompts, next(self.model.parameters()).device)

    @torch.no_grad()
    def generate(self, prompts: Prompts, sampling: SamplingConfig) -> list[list[Completion]]:
        tokenizer, model = self.tokenizer, self.model
        was_training = model.training
        model.eval()
        torch.manual_seed(sampling.seed)
        eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
        device = next(model.parameters()).device
        results: list[list[Completion]] = []
        bar = Bar("generating", len(prompts), unit="prompts")
        try:
            for start in range(0, len(prompts), self.batch_size):
                chunk = prompts[start:start + self.batch_size]
                encoded = prompt_token_ids(chunk, tokenizer)
                width = max(len(ids) for ids in encoded)
                input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                attention = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, ids in enumerate(encoded):
                    input_ids[row, width - len(ids):] = torch.tensor(ids)
                    attention[row, width - len(ids):] = 1
                greedy = sampling.temperature <= 0
                output = model.generate(
                    input_ids=input_ids.to(device), attention_mask=attention.to(device),
                    max_new_tokens=sampling.max_new_tokens, do_sample=not greedy,
                    temperature=None if greedy else sampling.temperature, top_p=None if greedy else sampling.top_p,
                    top_k=None, num_return_sequences=sampling.n, eos_token_id=eos, pad_token_id=pad,
                    synced_gpus=self.synced_gpus,
                )
                new_tokens = output[:, width:].tolist()
                for prompt_index in range(len(chunk)):
                    rows = new_tokens[prompt_index * sampling.n:(prompt_index + 1) * sampling.n]
                    results.append([self._completion(tokens, eos, pad) for tokens in rows])
                bar.advance(len(chunk))
        finally:
            bar.close()
            model.train(was_training)
        return results

    def _completion(self, tokens: list[int], eos: int, pad: int) -> Completion:
        if eos in tokens:
            kept, finished = tokens[:tokens.index(eos) + 1], True
        else:
            kept, finished = [t for t in tokens if t != pad] if pad != eos else tokens, False
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        return Completion(text=text, token_ids=kept, finished=finished)
