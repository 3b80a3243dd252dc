"""One concatenated forward pass per micro-batch of pairs, and the on-disk reference cache."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from tulu_cli.config import assets_dir, conf_dir
from tulu_cli.data.preference_data import prepare_preferences
from tulu_cli.train import reference as ref
from tulu_cli.train.batching import read_rows
from tulu_cli.train.logprobs import forward_logits, token_logprobs
from tulu_cli.train.pair_logprobs import dataset_logprobs, forward_pairs


@pytest.fixture(scope="module")
def setup(tiny_tokenizer, tiny_model_factory):
    from accelerate import Accelerator

    model_cfg = OmegaConf.load(conf_dir() / "model" / "tiny.yaml")
    tokenizer = tiny_tokenizer
    model = tiny_model_factory().eval()
    pairs, _ = prepare_preferences(str(assets_dir() / "tiny" / "prefs_test.jsonl"), {"max_rows": 12}, 256,
                                   tokenizer, None)
    return model_cfg, tokenizer, model, pairs, Accelerator(cpu=True)


def separate_logprob(model, ids, labels) -> tuple[float, int]:
    batch = {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels])}
    logprobs, mask = token_logprobs(forward_logits(model, batch), batch["labels"])
    return logprobs.sum().item(), int(mask.sum())


@pytest.mark.parametrize("packing", [True, False])
def test_concatenated_pass_equals_one_pass_per_sequence(setup, packing):
    _, tokenizer, model, pairs, _ = setup
    with torch.no_grad():
        together = forward_pairs(model, read_rows(pairs, range(4)), tokenizer.pad_token_id, packing, "cpu")
        for row, pair in enumerate(read_rows(pairs, range(4))):
            for side in ("chosen", "rejected"):
                total, tokens = separate_logprob(model, pair[f"{side}_input_ids"], pair[f"{side}_labels"])
                assert getattr(together, side)[row].item() == pytest.approx(total, abs=1e-4)
                assert getattr(together, f"{side}_tokens")[row].item() == tokens


def test_dataset_pass_matches_micro_batches_and_cache_is_reused(setup, tmp_path):
    model_cfg, tokenizer, model, pairs, accelerator = setup
    identity = ref.model_identity(model_cfg, 0, "no")
    key = ref.cache_key(identity, pairs, True)
    first, hit = ref.cached_reference(accelerator, model, pairs, tmp_path, key, 5, tokenizer.pad_token_id, True, {})
    assert not hit and (tmp_path / key / "logprobs.safetensors").exists() and (tmp_path / key / "meta.json").exists()
    with torch.no_grad():
        direct = forward_pairs(model, read_rows(pairs, [5, 6]), tokenizer.pad_token_id, True, "cpu")
    assert first.chosen[5:7].tolist() == pytest.approx(direct.chosen.tolist(), abs=1e-4)
    assert first.rejected[5:7].tolist() == pytest.approx(direct.rejected.tolist(), abs=1e-4)
    # A later run (another model object, same weights) loads the stored numbers: no forward pass runs.
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        second, hit = ref.cached_reference(accelerator, model, pairs, tmp_path, key, 5, tokenizer.pad_token_id,
                                           True, {})
    finally:
        handle.remove()
    assert hit and not calls
    assert torch.equal(second.chosen, first.chosen) and torch.equal(second.rejected_tokens, first.rejected_tokens)
    again = dataset_logprobs(accelerator, model, pairs, 3, tokenizer.pad_token_id, True)
    assert torch.allclose(again.chosen, first.chosen, atol=1e-4)


class RunsOnLoad:
    """Unpickling this calls `print`: a cache entry built of it would run code if it were unpickled."""

    def __reduce__(self):
        return (print, ("code ran while the cache was loaded",))


@pytest.mark.parametrize("entry", ["truncated", "pickled", "wrong_tensor"])
def test_an_entry_that_cannot_be_used_is_a_miss_and_is_never_unpickled(setup, tmp_path, capfd, entry):
    from safetensors.torch import save_file

    _, _, _, pairs, _ = setup
    folder = tmp_path / "key"
    folder.mkdir()
    path = folder / ref.CACHE_FILE
    if entry == "truncated":
        save_file({"logprobs": torch.zeros(4, len(pairs), dtype=torch.float64)}, path)
        path.write_bytes(path.read_bytes()[:-16])
    elif entry == "pickled":  # an old-format or planted entry under the file's name
        torch.save({"logprobs": RunsOnLoad()}, path)
    else:
        save_file({"logprobs": torch.zeros(4, len(pairs) + 1, dtype=torch.float64)}, path)
    assert ref.load_cached(tmp_path, "key", len(pairs)) is None
    assert "code ran" not in capfd.readouterr().out


def test_cache_key_covers_model_data_and_tokenisation(setup, tmp_path):
    model_cfg, tokenizer, model, pairs, _ = setup
    identity = ref.model_identity(model_cfg, 0, "no")
    key = ref.cache_key(identity, pairs, True)
    # The key depends on the token ids, not on where the rows are stored.
    import datasets

    copy = datasets.Dataset.from_list([dict(pair) for pair in pairs])
    assert key == ref.cache_key(ref.model_identity(model_cfg, 0, "no"), copy, True)
    shorter, _ = prepare_preferences(str(assets_dir() / "tiny" / "prefs_test.jsonl"), {"max_rows": 12}, 40,
                                     tokenizer, None)
    different = {
        "max_seq_length": ref.cache_key(identity, shorter, True),
        "data": ref.cache_key(identity, pairs.select(range(1, len(pairs))), True),
        "packing": ref.cache_key(identity, pairs, False),
        "seed": ref.cache_key(ref.model_identity(model_cfg, 1, "no"), pairs, True),
        "precision": ref.cache_key(ref.model_identity(model_cfg, 0, "bf16"), pairs, True),
    }
    assert key not in different.values() and len(set(different.values())) == len(different)
    # A local model directory is identified by its weight files: rewriting them changes the key.
    saved = tmp_path / "model"
    model.save_pretrained(saved)
    local = OmegaConf.merge(model_cfg, {"path": str(saved)})
    before = ref.cache_key(ref.model_identity(local, 0, "no"), pairs, True)
    with torch.no_grad():
        model.model.norm.weight.add_(1.0)
    model.save_pretrained(saved)
    with torch.no_grad():
        model.model.norm.weight.sub_(1.0)
    assert ref.cache_key(ref.model_identity(local, 0, "no"), pairs, True) != before
    assert ref.default_cache_dir().parts[-2:] == ("tulu", "ref_logprobs")
