"""`tulu curate` with `mode: preferences`: prompts -> completions -> judgements -> pairs, resumable.

Reads top to bottom: load prompts; for each model of the pool (the on-policy model first) sample its
assigned completions shard by shard; judge each shard; binarise every strategy; write
RUN_DIR/<pairs name>/ (Tulu 3 preference schema, readable by `tulu dpo data.train=...`),
RUN_DIR/completions/ (every completion with its ratings and raw judge replies), rejects and a summary.
All paid work lives in the run directory's `work` folder (see `store`): rerunning with the same output_dir resumes it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa

from tulu_cli.curate.dataset_dir import write_dataset, write_rows_jsonl
from tulu_cli.curate.display import console
from tulu_cli.curate.schemas import ARROW_SCHEMAS
from tulu_cli.errors import StageError
from tulu_cli.generation import SamplingConfig
from tulu_cli.io import atomic_write_json
from tulu_cli.preferences.assign import ON_POLICY, assign_models, check_slots
from tulu_cli.preferences.binarize import STRATEGIES, Candidate, choose_pair
from tulu_cli.preferences.judges import JUDGE_KINDS, JudgeItem, Judgement, LLMJudge, VerifierJudge, tie_reason
from tulu_cli.preferences.models import ChatRequest, build_chat_model, complete_shard
from tulu_cli.preferences.prompts import Prompt, load_prompts
from tulu_cli.preferences.store import ShardStore, derived_seed, fingerprint
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


def _sample(specs: dict, shards: list[list[Prompt]], slots: dict[str, list[str]], sampling: SamplingConfig,
            config: dict, work: Path) -> dict[str, ShardStore]:
    """Every model's completions, shard by shard; returns the finished store of each model."""
    stores = {name: ShardStore(work / "completions" / name, {"model": name, "spec": spec})
              for name, spec in specs.items()}
    seed = int(config.get("seed", 0))
    with progress_bars() as new_bar:
        for name, spec in specs.items():
            store = stores[name]
            todo = [index for index in range(len(shards)) if not store.done(index)]
            advance = new_bar(f"completions: {name}", len(shards))
            advance(len(shards) - len(todo))
            if not todo:
                continue  # finished in an earlier run: the model is not even loaded
            model = _build_model(name, spec, config.get("generation") or {})
            for index in todo:
                requests = [ChatRequest(f"{prompt.id}/{slot}", prompt.messages, derived_seed(seed, prompt.id, slot))
                            for prompt in shards[index] for slot, owner in enumerate(slots[prompt.id])
                            if owner == name]
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


def _judge(cfg: dict, shards: list[list[Prompt]], completions: dict[str, dict], per_prompt: int, config: dict,
           root: Path) -> ShardStore:
    store = ShardStore(root, {"judge": cfg})
    judge = None
    with progress_bars() as new_bar:
        advance = new_bar(f"judge: {cfg.get('kind')}", len(shards))
        for index, prompts in enumerate(shards):
            if store.done(index):
                advance(1)
                continue
            judge = judge or _build_judge(cfg, config.get("generation") or {})
            keys = [key for prompt in prompts for key in _keys(prompt, per_prompt)]
            # A completion the server refused to write has nothing to judge: it stays unrated, with the reason.
            refused = {key: Judgement(error=f"no completion: {completions[key]['error']}")
                       for key in keys if completions[key].get("error")}
            items = [JudgeItem(key, prompt, completions[key]["text"]) for prompt in prompts
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


def _read_all(store: ShardStore, shards: int) -> dict[str, dict]:
    return {row["key"]: row for index in range(shards) for row in store.read(index)}


def _pair_row(prompt: Prompt, chosen: dict, rejected: dict) -> dict:
    first_user = next(m["content"] for m in prompt.messages if m["role"] == "user")
    return {"id": prompt.id, "source": prompt.source, "prompt": first_user,
            "chosen": prompt.messages + [{"role": "assistant", "content": chosen["text"]}],
            "rejected": prompt.messages + [{"role": "assistant", "content": rejected["text"]}],
            "chosen_model": chosen["model"], "rejected_model": rejected["model"],
            "chosen_rating": chosen["mean"], "rejected_rating": rejected["mean"]}


def run_preferences(config: dict, run_dir: Path) -> None:
    specs = _pool_specs(config)
    completions_cfg = dict(config.get("completions") or {})
    per_prompt, on_policy = int(completions_cfg.get("per_prompt", 4)), int(completions_cfg.get("on_policy", 1))
    check_slots(per_prompt, on_policy, [name for name in specs if name != ON_POLICY])
    strategies = dict(config.get("binarize") or {"pairs": "random_lower"})
    for name, strategy in strategies.items():
        if strategy not in STRATEGIES or name in ("completions", "work"):
            raise StageError(f"binarize.{name}: strategy must be one of {', '.join(STRATEGIES)} "
                             "(and the name not completions/work)")
    judge_cfg = dict(config.get("judge") or {})
    seed = int(config.get("seed", 0))

    with progress_bars() as new_bar:
        prompts, mix = load_prompts(dict(config.get("prompts") or {}), seed, new_bar)
    write_rows_jsonl(run_dir / "prompts.rejects.jsonl", mix.rejects)
    if not prompts:
        raise StageError("prompts: no usable prompt (see prompts.rejects.jsonl)")
    slots = {p.id: assign_models(p.id, per_prompt, on_policy, [n for n in specs if n != ON_POLICY], seed)
             for p in prompts}
    shard_size = int(config.get("shard_size", 64))
    shards = [prompts[i:i + shard_size] for i in range(0, len(prompts), shard_size)]
    sampling = SamplingConfig(max_new_tokens=int(completions_cfg.get("max_new_tokens", 512)),
                              temperature=float(completions_cfg.get("temperature", 1.0)),
                              top_p=float(completions_cfg.get("top_p", 1.0)))
    work = run_dir / "work" / fingerprint({"prompts": [p.to_json() for p in prompts], "slots": slots,
                                           "shard_size": shard_size, "models": specs, "sampling": sampling.__dict__,
                                           "generation": config.get("generation"), "seed": seed})
    console.print(f"preference data: {len(prompts)} prompts x {per_prompt} completions in {len(shards)} shards; "
                  f"work store {work.relative_to(run_dir)}")

    stores = _sample(specs, shards, slots, sampling, config, work)
    completions: dict[str, dict] = {}
    for store in stores.values():
        completions.update(_read_all(store, len(shards)))
    judged = _read_all(_judge(judge_cfg, shards, completions, per_prompt, config,
                              work / "judgements" / fingerprint(judge_cfg)), len(shards))

    side_rows, pair_rows = [], {name: [] for name in strategies}
    skipped = {name: Counter() for name in strategies}
    counts: Counter = Counter()
    for prompt in prompts:
        keys = _keys(prompt, per_prompt)
        rated = [{**completions[k], **judged[k]} for k in keys]
        side_rows.append({**prompt.to_json(),
                          "completions": [{"model": r["model"], "text": r["text"], "finished": r["finished"]}
                                          for r in rated],
                          "ratings": [{key: r[key] for key in ("ratings", "mean", "attempts", "unparsable",
                                                                "error", "replies")} for r in rated]})
        counts["completions"] += len(rated)
        counts["completions_refused"] += sum("error" in completions[k] for k in keys)
        counts["unrated"] += sum(r["mean"] is None for r in rated)
        counts["unparsable_replies"] += sum(r["unparsable"] for r in rated)
        candidates = [Candidate(slot, r["text"], r["mean"]) for slot, r in enumerate(rated)]
        for name, strategy in strategies.items():
            outcome = choose_pair(candidates, strategy, seed, prompt.id, tie_reason(judge_cfg.get("kind", "")))
            if isinstance(outcome, str):
                skipped[name][outcome] += 1
            else:
                pair_rows[name].append(_pair_row(prompt, rated[outcome[0].slot], rated[outcome[1].slot]))

    base_manifest = {"mode": "preferences", "seed": seed, "prompts": len(prompts),
                     "prompt_sources": [s.to_json() for s in mix.sources], "config": config}
    rows_per_file = int(config.get("rows_per_file", 100_000))
    write_dataset(run_dir / "completions", pa.Table.from_pylist(side_rows),
                  {"name": "completions", "kind": "preference_completions", **base_manifest,
                   "counts": dict(counts)}, rows_per_file)
    summary = {"prompts": len(prompts), "prompts_rejected": len(mix.rejects), **counts, "datasets": {}}
    for name in strategies:
        table = pa.Table.from_pylist(pair_rows[name], schema=PAIR_SCHEMA)
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
