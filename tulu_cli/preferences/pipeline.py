"""`tulu curate` with `mode: preferences`: prompts -> completions -> judgements -> pairs, resumable.

Reads top to bottom: load prompts; for each model of the pool (the on-policy model first) sample its
assigned completions shard by shard; judge each shard; binarise every strategy; write
RUN_DIR/<pairs name>/ (Tulu 3 preference schema, readable by `tulu dpo data.train=...`),
RUN_DIR/completions/ (every completion with its ratings and raw judge replies), rejects and a summary.
All paid work lives in the run directory's `work` folder (see `store`): rerunning with the same output_dir resumes it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from tulu_cli.curate.dataset_dir import write_dataset
from tulu_cli.curate.display import console
from tulu_cli.curate.schemas import ARROW_SCHEMAS
from tulu_cli.data.arrow_rows import write_rows
from tulu_cli.errors import StageError
from tulu_cli.generation import SamplingConfig
from tulu_cli.io import atomic_copy, atomic_write_json, scratch_dir
from tulu_cli.preferences.assign import ON_POLICY, assign_models, check_slots
from tulu_cli.preferences.binarize import STRATEGIES, Candidate, choose_pair
from tulu_cli.preferences.judges import JUDGE_KINDS, JudgeItem, Judgement, LLMJudge, VerifierJudge, tie_reason
from tulu_cli.preferences.models import ChatRequest, build_chat_model, complete_shard
from tulu_cli.preferences.prompts import READ_ROWS, Prompt, PromptSet, load_prompts
from tulu_cli.preferences.store import ShardStore, Streamed, derived_seed, fingerprint, streamed_fingerprint
from tulu_cli.progress import progress_bars

PAIR_SCHEMA = ARROW_SCHEMAS["preference"].append(pa.field("chosen_model", pa.string())) \
    .append(pa.field("rejected_model", pa.string())).append(pa.field("chosen_rating", pa.float64())) \
    .append(pa.field("rejected_rating", pa.float64()))


def _pool_specs(config: dict) -> dict[str, dict]:
    """Every model that writes completions, by name: the on-policy model (`model`) and the pool."""
    model = dict(config.get("model") or {})
    if not model.get("path"):
        raise StageError("model.path (the on-policy model, e.g. an SFT run's final/ directory) is required")
    pool = {str(name): dict(spec) for name, spec in (config.get("pool") or {}).items()}
    return {ON_POLICY: model, **pool}


def _build_model(name: str, spec: dict, generation: dict):
    return build_chat_model(name, spec, generation.get("backend", "hf"), int(generation.get("batch_size", 32)))


def work_key(prompts: PromptSet, slots_of: Callable[[str], list[str]], shard_size: int, specs: dict,
             sampling: dict, generation: dict | None, seed: int) -> str:
    """The name of the run's work store: the fingerprint of {"prompts": [every prompt], "slots": {id: its
    models}, "shard_size", "models", "sampling", "generation", "seed"}, hashed a piece at a time so that the
    prompts are never all in memory."""
    ids = prompts.ids.take(pc.sort_indices(prompts.ids))  # the slots object's keys, in sorted order

    def slots() -> Iterator[tuple[str, list[str]]]:
        for start in range(0, len(ids), READ_ROWS):
            for uid in ids[start:start + READ_ROWS].to_pylist():
                yield uid, slots_of(uid)

    return streamed_fingerprint({"generation": generation, "models": specs,
                                 "prompts": Streamed(prompt.to_json() for prompt in prompts),
                                 "sampling": sampling, "seed": seed, "shard_size": shard_size,
                                 "slots": Streamed(slots(), mapping=True)})


def _sample(specs: dict, prompts: PromptSet, shard_size: int, slots_of: Callable[[str], list[str]],
            sampling: SamplingConfig, config: dict, work: Path) -> dict[str, ShardStore]:
    """Every model's completions, shard by shard; returns the finished store of each model."""
    stores = {name: ShardStore(work / "completions" / name, {"model": name, "spec": spec})
              for name, spec in specs.items()}
    seed, shards = int(config.get("seed", 0)), prompts.shards(shard_size)
    with progress_bars() as new_bar:
        for name, spec in specs.items():
            store = stores[name]
            todo = [index for index in range(shards) if not store.done(index)]
            advance = new_bar(f"completions: {name}", shards)
            advance(shards - len(todo))
            if not todo:
                continue  # finished in an earlier run: the model is not even loaded
            model = _build_model(name, spec, config.get("generation") or {})
            for index in todo:
                requests = [ChatRequest(f"{prompt.id}/{slot}", prompt.messages, derived_seed(seed, prompt.id, slot))
                            for prompt in prompts.shard(index, shard_size)
                            for slot, owner in enumerate(slots_of(prompt.id)) if owner == name]
                complete_shard(model, store, index, requests, sampling, derived_seed(seed, name, index), {"model": name})
                advance(1)
            model.close()
    return stores


def _build_judge(cfg: dict, generation: dict):
    kind = cfg.get("kind")
    if kind not in JUDGE_KINDS:
        raise StageError(f"judge.kind must be one of {', '.join(JUDGE_KINDS)}, got {kind!r}")
    if kind == "verifier":
        return VerifierJudge(cfg)
    if not cfg.get("model"):
        raise StageError("judge.model: an LLM judge needs a model (an endpoint or a local path)")
    return LLMJudge(cfg, _build_model("judge", dict(cfg["model"]), generation))


def _shard_completions(stores: dict[str, ShardStore], index: int) -> dict[str, dict]:
    """Every model's completions of shard `index`, by key."""
    return {row["key"]: row for store in stores.values() for row in store.read(index)}


def _judge(cfg: dict, prompts: PromptSet, shard_size: int, stores: dict[str, ShardStore], per_prompt: int,
           config: dict, root: Path) -> ShardStore:
    store = ShardStore(root, {"judge": cfg})
    judge = None
    shards = prompts.shards(shard_size)
    with progress_bars() as new_bar:
        advance = new_bar(f"judge: {cfg.get('kind')}", shards)
        for index in range(shards):
            if store.done(index):
                advance(1)
                continue
            judge = judge or _build_judge(cfg, config.get("generation") or {})
            shard, completions = prompts.shard(index, shard_size), _shard_completions(stores, index)
            keys = [key for prompt in shard for key in _keys(prompt, per_prompt)]
            # A completion the server refused to write has nothing to judge: it stays unrated, with the reason.
            refused = {key: Judgement(error=f"no completion: {completions[key]['error']}")
                       for key in keys if completions[key].get("error")}
            items = [JudgeItem(key, prompt, completions[key]["text"]) for prompt in shard
                     for key in _keys(prompt, per_prompt) if key not in refused]
            judgements = {**judge.judge(items, derived_seed(config.get("seed", 0), "judge", index),
                                        store.journal(index)), **refused}
            store.write(index, [{"key": key, **judgements[key].to_json()} for key in keys])
            advance(1)
    if judge is not None and hasattr(judge, "model"):
        judge.model.close()
    return store


def _keys(prompt: Prompt, per_prompt: int) -> list[str]:
    return [f"{prompt.id}/{slot}" for slot in range(per_prompt)]


def _pair_row(prompt: Prompt, chosen: dict, rejected: dict) -> dict:
    first_user = next(m["content"] for m in prompt.messages if m["role"] == "user")
    return {"id": prompt.id, "source": prompt.source, "prompt": first_user,
            "chosen": prompt.messages + [{"role": "assistant", "content": chosen["text"]}],
            "rejected": prompt.messages + [{"role": "assistant", "content": rejected["text"]}],
            "chosen_model": chosen["model"], "rejected_model": rejected["model"],
            "chosen_rating": chosen["mean"], "rejected_rating": rejected["mean"]}


def _spool_pairs(spool: Path, strategies: dict, shards: Iterator, seed: int,
                 judge_cfg: dict) -> tuple[Counter, dict[str, Counter]]:
    """Each strategy's pair of every prompt, shard by shard, into `spool`/NAME.arrow; the completion counts
    and each strategy's skipped prompts by reason."""
    skipped = {name: Counter() for name in strategies}
    counts: Counter = Counter()
    with ExitStack() as open_writers:
        writers = {name: open_writers.enter_context(pa.ipc.new_stream(str(spool / f"{name}.arrow"), PAIR_SCHEMA))
                   for name in strategies}
        for shard in shards:
            pair_rows: dict[str, list[dict]] = {name: [] for name in strategies}
            for prompt, rated in shard:
                counts["completions"] += len(rated)
                counts["completions_refused"] += sum(r["error"] is not None and r["error"].startswith("no completion")
                                                     for r in rated)
                counts["unrated"] += sum(r["mean"] is None for r in rated)
                counts["unparsable_replies"] += sum(r["unparsable"] for r in rated)
                candidates = [Candidate(slot, r["text"], r["mean"]) for slot, r in enumerate(rated)]
                for name, strategy in strategies.items():
                    outcome = choose_pair(candidates, strategy, seed, prompt.id, tie_reason(judge_cfg.get("kind", "")))
                    if isinstance(outcome, str):
                        skipped[name][outcome] += 1
                    else:
                        pair_rows[name].append(_pair_row(prompt, rated[outcome[0].slot], rated[outcome[1].slot]))
            for name, rows in pair_rows.items():
                if rows:
                    writers[name].write_batch(pa.RecordBatch.from_pylist(rows, schema=PAIR_SCHEMA))
    return counts, skipped


def _rated_shards(prompts: PromptSet, shard_size: int, stores: dict[str, ShardStore], judged: ShardStore,
                  per_prompt: int) -> Iterator[list[tuple[Prompt, list[dict]]]]:
    """Shard by shard: each prompt with its completions, each merged with its judgement, in slot order."""
    for index in range(prompts.shards(shard_size)):
        completions = _shard_completions(stores, index)
        judgements = {row["key"]: row for row in judged.read(index)}
        yield [(prompt, [{**completions[key], **judgements[key]} for key in _keys(prompt, per_prompt)])
               for prompt in prompts.shard(index, shard_size)]


def _side_row(prompt: Prompt, rated: list[dict]) -> dict:
    """A prompt with every completion and every rating (the `completions` dataset)."""
    return {**prompt.to_json(),
            "completions": [{"model": r["model"], "text": r["text"], "finished": r["finished"]} for r in rated],
            "ratings": [{key: r[key] for key in ("ratings", "mean", "attempts", "unparsable", "error", "replies")}
                        for r in rated]}


def _memory_mapped(path: Path) -> pa.Table:
    return pa.ipc.open_stream(pa.memory_map(str(path))).read_all()


def run_preferences(config: dict, run_dir: Path) -> None:
    specs = _pool_specs(config)
    completions_cfg = dict(config.get("completions") or {})
    per_prompt, on_policy = int(completions_cfg.get("per_prompt", 4)), int(completions_cfg.get("on_policy", 1))
    pool = [name for name in specs if name != ON_POLICY]
    check_slots(per_prompt, on_policy, pool)
    strategies = dict(config.get("binarize") or {"pairs": "random_lower"})
    for name, strategy in strategies.items():
        if strategy not in STRATEGIES or name in ("completions", "work"):
            raise StageError(f"binarize.{name}: strategy must be one of {', '.join(STRATEGIES)} "
                             "(and the name not completions/work)")
    judge_cfg = dict(config.get("judge") or {})
    seed = int(config.get("seed", 0))

    with progress_bars() as new_bar:
        prompts, mix = load_prompts(dict(config.get("prompts") or {}), seed, new_bar)
    atomic_copy(mix.rejects.path, run_dir / "prompts.rejects.jsonl")
    if not len(prompts):
        raise StageError("prompts: no usable prompt (see prompts.rejects.jsonl)")

    def slots_of(prompt_id: str) -> list[str]:
        return assign_models(prompt_id, per_prompt, on_policy, pool, seed)

    shard_size = int(config.get("shard_size", 64))
    sampling = SamplingConfig(max_new_tokens=int(completions_cfg.get("max_new_tokens", 512)),
                              temperature=float(completions_cfg.get("temperature", 1.0)),
                              top_p=float(completions_cfg.get("top_p", 1.0)))
    work = run_dir / "work" / work_key(prompts, slots_of, shard_size, specs, sampling.__dict__,
                                        config.get("generation"), seed)
    console.print(f"preference data: {len(prompts)} prompts x {per_prompt} completions in "
                  f"{prompts.shards(shard_size)} shards; work store {work.relative_to(run_dir)}")

    stores = _sample(specs, prompts, shard_size, slots_of, sampling, config, work)
    judged = _judge(judge_cfg, prompts, shard_size, stores, per_prompt, config,
                    work / "judgements" / fingerprint(judge_cfg))

    # The outputs are assembled a shard at a time into Arrow files (the spool: copies of every output,
    # removed whether the assembly finishes or fails), then written as datasets from them.
    with scratch_dir(run_dir, ".assemble-") as spool:
        counts, skipped = _spool_pairs(spool, strategies, _rated_shards(prompts, shard_size, stores, judged,
                                                                        per_prompt), seed, judge_cfg)
        write_rows(spool / "completions.arrow", lambda: ([_side_row(*item) for item in shard]
                                                         for shard in _rated_shards(prompts, shard_size, stores,
                                                                                    judged, per_prompt)))

        base_manifest = {"mode": "preferences", "seed": seed, "prompts": len(prompts),
                         "prompt_sources": [s.to_json() for s in mix.sources], "config": config}
        rows_per_file = int(config.get("rows_per_file", 100_000))
        write_dataset(run_dir / "completions", _memory_mapped(spool / "completions.arrow"),
                      {"name": "completions", "kind": "preference_completions", **base_manifest,
                       "counts": dict(counts)}, rows_per_file)
        summary = {"prompts": len(prompts), "prompts_rejected": len(mix.rejects), **counts, "datasets": {}}
        for name in strategies:
            table = _memory_mapped(spool / f"{name}.arrow")
            write_dataset(run_dir / name, table, {"name": name, "kind": "preference", "strategy": strategies[name],
                                                  **base_manifest, "skipped": dict(skipped[name])}, rows_per_file)
            summary["datasets"][name] = {"path": str(run_dir / name), "strategy": strategies[name],
                                         "pairs": table.num_rows, "skipped": dict(skipped[name])}
    atomic_write_json(run_dir / "summary.json", summary)
    for name, info in summary["datasets"].items():
        console.print(f"{name}: {info['pairs']} pairs ({info['strategy']}); skipped "
                      + (", ".join(f"{k} {v}" for k, v in sorted(info["skipped"].items())) or "none"))
    console.print(f"completions: {counts['completions']} ({counts['unrated']} unrated, "
                  f"{counts['completions_refused']} refused by their server, "
                  f"{counts['unparsable_replies']} unparsable judge replies) in {run_dir / 'completions'}")
