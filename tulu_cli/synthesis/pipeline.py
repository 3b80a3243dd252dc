"""`tulu curate` with `mode: synthesize`: synthetic prompts (and optionally responses) for a target skill.

Reads top to bottom:
1. prompts: generated from personas (`personas` + `prompt_generation`, by `model`), or taken from a data
   mix (`prompts`, read like the preference pipeline's prompts);
2. near-duplicate prompts removed (`near_dup`);
3. constraints attached (`constraints`): RLVR rows verified by the `ifeval` verifier;
4. rows overlapping the eval suite removed (`decontaminate`);
5. responses (`responses`), for math optionally kept only on self-consistent final answers, which become
   the `ground_truth` of RLVR rows; with `verify: true` a response must pass its row's verifier.
Writes RUN_DIR/prompts (every kept prompt), RUN_DIR/rlvr (rows with a ground truth), RUN_DIR/sft (prompt +
response) in the curate format, RUN_DIR/rejects.jsonl (every row set aside, with stage and reason) and
summary.json. Model calls live in the run directory's `work` folder (sharded, keyed by fingerprints): rerunning resumes them.
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
from tulu_cli.preferences.models import ChatRequest, build_chat_model
from tulu_cli.preferences.prompts import Prompt, load_prompts
from tulu_cli.preferences.store import ShardStore, derived_seed, fingerprint
from tulu_cli.progress import progress_bars
from tulu_cli.synthesis.augment import AugmentConfig, augment
from tulu_cli.synthesis.generate import PromptTemplate, answer_in_shards
from tulu_cli.synthesis.near_dup import NearDupConfig, near_duplicates
from tulu_cli.synthesis.personas import load_personas
from tulu_cli.synthesis.responses import consensus

PROMPT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("messages", ARROW_SCHEMAS["sft"].field("messages").type),
        ("persona", pa.string()),
    ]
)


def _sampling(cfg: dict, what: str) -> SamplingConfig:
    try:
        return SamplingConfig(
            max_new_tokens=int(cfg.get("max_new_tokens", 512)),
            temperature=float(cfg.get("temperature", 1.0)),
            top_p=float(cfg.get("top_p", 1.0)),
        )
    except (TypeError, ValueError) as exc:
        raise StageError(f"{what}: bad sampling setting: {exc}") from None


def _model_builder(name: str, spec: dict, generation: dict):
    if not spec or not (spec.get("path") or spec.get("base_url")):
        raise StageError(
            f"{name}: a model is required (model.path=DIR_OR_HUB_ID, or base_url + model of an "
            "OpenAI-compatible endpoint)"
        )
    return lambda: build_chat_model(
        name, dict(spec), generation.get("backend", "hf"), int(generation.get("batch_size", 32))
    )


def _shards(requests: list[ChatRequest], per_item: int, shard_size: int) -> list[list[ChatRequest]]:
    step = shard_size * per_item
    return [requests[i : i + step] for i in range(0, len(requests), step)]


def _answer(
    label: str,
    name: str,
    requests: list[ChatRequest],
    per_item: int,
    spec: dict,
    sampling: SamplingConfig,
    config: dict,
    work: Path,
    describe: dict,
) -> dict[str, dict]:
    """Replies to `requests` (`per_item` per prompt or persona), `shard_size` items per resumable shard, in a
    work store keyed by everything that determines them (a changed setting starts new work)."""
    seed, shard_size = int(config.get("seed", 0)), int(config.get("shard_size", 64))
    generation = dict(config.get("generation") or {})
    key = {
        "requests": [r.__dict__ for r in requests],
        "model": spec,
        "sampling": sampling.__dict__,
        "shard_size": shard_size,
        "generation": generation,
        "seed": seed,
    }
    store = ShardStore(
        work / label / fingerprint(key), {"model": spec, "sampling": sampling.__dict__, **describe}
    )
    return answer_in_shards(
        label,
        _model_builder(name, spec, generation),
        _shards(requests, per_item, shard_size),
        sampling,
        store,
        seed,
    )


def _reject(
    rejects: list[dict],
    counts: Counter,
    stage: str,
    row_id: str,
    reason: str,
    detail: str,
    raw: object = None,
) -> None:
    rejects.append({"stage": stage, "id": row_id, "reason": reason, "detail": detail, "raw": raw})
    counts[f"{stage}:{reason}"] += 1


def persona_prompts(config: dict, work: Path, rejects: list[dict], counts: Counter) -> list[dict]:
    """Prompts written by the generator for each persona (one shard = `shard_size` personas)."""
    seed = int(config.get("seed", 0))
    personas, persona_rejects = load_personas(dict(config["personas"]), seed)
    rejects += persona_rejects
    counts["personas"], counts["personas_rejected"] = len(personas), len(persona_rejects)
    if not personas:
        raise StageError("personas: no usable persona (see rejects.jsonl)")
    template = PromptTemplate.from_config(dict(config.get("prompt_generation") or {}))
    sampling = _sampling(dict(config.get("sampling") or {}), "sampling")
    spec = dict(config.get("model") or {})
    requests = [request for persona in personas for request in template.requests(persona, seed)]
    replies = _answer(
        "prompts",
        "model",
        requests,
        template.per_persona,
        spec,
        sampling,
        config,
        work,
        {"template": template.__dict__},
    )
    skill, rows = str(config.get("skill") or "synthetic"), []
    for persona in personas:
        for request in template.requests(persona, seed):
            reply = replies[request.key]
            counts["generated"] += 1
            row_id = f"{skill}-{request.key.replace('/', '-')}"
            if reply.get("error"):
                _reject(rejects, counts, "prompt_generation", row_id, "request_rejected", reply["error"])
                continue
            parsed = template.parse(reply["text"], reply["finished"])
            if isinstance(parsed, tuple):
                _reject(rejects, counts, "prompt_generation", row_id, *parsed, raw=reply["text"])
                continue
            rows.append(
                {
                    "id": row_id,
                    "source": f"persona_{skill}",
                    "persona": persona.text,
                    "messages": [{"role": "user", "content": parsed}],
                }
            )
    return rows


def mix_prompts(config: dict, rejects: list[dict], counts: Counter) -> list[dict]:
    with progress_bars() as new_bar:
        prompts, mix = load_prompts(dict(config["prompts"]), int(config.get("seed", 0)), new_bar)
    rejects += [{"stage": "prompts", **reject} for reject in mix.rejects]
    counts["prompts_read"] = sum(source.rows_read for source in mix.sources)
    counts["prompts_rejected"] = len(mix.rejects)
    return [{**prompt.to_json(), "persona": None} for prompt in prompts]


def drop_near_duplicates(rows: list[dict], cfg: dict, rejects: list[dict], counts: Counter) -> list[dict]:
    try:
        settings = NearDupConfig(
            **{k: cfg[k] for k in ("ngram", "threshold", "num_perm", "bands") if k in cfg}
        )
    except (TypeError, ValueError) as exc:
        raise StageError(str(exc)) from None
    duplicates = near_duplicates([row["messages"][-1]["content"] for row in rows], settings)
    for index, (kept, similarity) in duplicates.items():
        _reject(
            rejects,
            counts,
            "near_dup",
            rows[index]["id"],
            "near_duplicate",
            f"Jaccard {similarity:.3f} with {rows[kept]['id']}",
            rows[index]["messages"][-1]["content"],
        )
    return [row for index, row in enumerate(rows) if index not in duplicates]


def attach_constraints(
    rows: list[dict], cfg: AugmentConfig, seed: int, rejects: list[dict], counts: Counter
) -> list[dict]:
    out = []
    for row in rows:
        prompt = Prompt(
            row["id"], row["source"], row["messages"], row.get("ground_truth"), row.get("dataset")
        )
        result = augment(prompt, cfg, seed)
        if isinstance(result, str):
            _reject(rejects, counts, "constraints", row["id"], result, "no constraint could be attached", row)
            continue
        out.append({**result, "persona": row.get("persona")})
    return out


def drop_contaminated(rows: list[dict], cfg: dict, rejects: list[dict], counts: Counter) -> list[dict]:
    from tulu_cli.synthesis.decontaminate import contaminated_rows

    hits = contaminated_rows(rows, cfg)
    for index, match in hits.items():
        _reject(
            rejects,
            counts,
            "decontaminate",
            rows[index]["id"],
            "contaminated",
            f"{match['eval_set']} instance {match['eval_id']} (score {match['score']})",
            rows[index]["messages"],
        )
    return [row for index, row in enumerate(rows) if index not in hits]


def add_responses(
    rows: list[dict], cfg: dict, config: dict, work: Path, rejects: list[dict], counts: Counter
) -> list[dict]:
    """Rows with `response`; with self-consistency also `ground_truth`/`dataset`; with `verify` only the
    verified ones."""
    unknown = set(cfg) - {
        "model",
        "samples",
        "temperature",
        "top_p",
        "max_new_tokens",
        "self_consistency",
        "verify",
    }
    if unknown:
        raise StageError(f"responses: unknown keys {sorted(unknown)}")
    seed = int(config.get("seed", 0))
    samples = int(cfg.get("samples", 1))
    agree = dict(cfg.get("self_consistency") or {})
    if samples < 1 or (agree and samples < 2):
        raise StageError(f"responses.samples must be >= 1 (>= 2 with self_consistency), got {samples}")
    spec = dict(cfg.get("model") or config.get("model") or {})
    sampling = _sampling(cfg, "responses")
    requests = [
        ChatRequest(f"{row['id']}/{n}", row["messages"], derived_seed(seed, "response", row["id"], n))
        for row in rows
        for n in range(samples)
    ]
    replies = _answer(
        "responses", "responses.model", requests, samples, spec, sampling, config, work, {"samples": samples}
    )
    out = []
    for row in rows:
        answers = [replies[f"{row['id']}/{n}"] for n in range(samples)]
        refused = next((answer["error"] for answer in answers if answer.get("error")), None)
        if refused is not None:
            _reject(rejects, counts, "responses", row["id"], "request_rejected", refused)
            continue
        texts = [answer["text"] for answer in answers]
        row = {**row, "response": texts[0]}
        if agree:
            verifier = str(agree.get("verifier", "math"))
            result = consensus(texts, verifier, float(agree.get("min_agreement", 0.5)))
            if isinstance(result, tuple):
                _reject(rejects, counts, "self_consistency", row["id"], *result, texts)
                continue
            row.update(
                response=texts[result.sample],
                ground_truth=result.answer,
                dataset=verifier,
                agreement=result.agreement,
            )
        out.append(row)
    if not cfg.get("verify"):
        return out
    # Scored in the verifier pool: a response past the per-row time limit is rejected, never waited on.
    from tulu_cli.rewards.registry import verify_batch

    checked = [row for row in out if row.get("ground_truth") is not None]
    verdicts = iter(verify_batch(checked))
    kept = []
    for row in out:
        if row.get("ground_truth") is not None:
            verdict = next(verdicts)
            if verdict.score < 1.0:
                reason = verdict.error or f"score {verdict.score}"
                _reject(rejects, counts, "verify", row["id"], "not_verified", reason, row["response"])
                continue
        kept.append(row)
    return kept


def _table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(
        [{field: row.get(field) for field in schema.names} for row in rows], schema=schema
    )


def run_synthesis(config: dict, run_dir: Path) -> None:
    seed = int(config.get("seed", 0))
    if not config.get("personas") and not config.get("prompts"):
        raise StageError(
            "synthesize needs `personas` (to generate prompts) or `prompts` (a data mix to augment)"
        )
    constraints = (
        AugmentConfig.from_config(dict(config["constraints"])) if config.get("constraints") else None
    )
    responses = dict(config.get("responses") or {})
    if constraints and responses.get("self_consistency"):
        raise StageError(
            "constraints and responses.self_consistency both set a row's ground truth: choose one"
        )
    rejects: list[dict] = []
    counts: Counter = Counter()
    work = run_dir / "work"

    rows = (
        persona_prompts(config, work, rejects, counts)
        if config.get("personas")
        else mix_prompts(config, rejects, counts)
    )
    counts["prompts"] = len(rows)
    near_dup = dict(config.get("near_dup") or {})
    if near_dup.pop("enabled", True):
        rows = drop_near_duplicates(rows, near_dup, rejects, counts)
    if constraints:
        rows = attach_constraints(rows, constraints, seed, rejects, counts)
    if config.get("decontaminate"):
        rows = drop_contaminated(rows, dict(config["decontaminate"]), rejects, counts)
    if responses:
        rows = add_responses(rows, responses, config, work, rejects, counts)
    if not rows:
        write_rows_jsonl(run_dir / "rejects.jsonl", rejects)
        raise StageError("no row survived the synthesis (see rejects.jsonl for why)")

    generator = config.get("model") if config.get("personas") else None
    template = (config.get("prompt_generation") or {}).get("template")
    counts.update(rows=len(rows), rejected=len(rejects))
    base = {
        "mode": "synthesize",
        "skill": config.get("skill"),
        "seed": seed,
        "generator": generator,
        "template": template,
        "constraints": config.get("constraints"),
        "responder": (responses.get("model") or config.get("model")) if responses else None,
        "counts": dict(counts),
        "rejects_file": "../rejects.jsonl",
        "config": config,
    }
    outputs = {"prompts": ("prompts", PROMPT_SCHEMA, rows)}
    if any(row.get("ground_truth") is not None for row in rows):
        outputs["rlvr"] = (
            "rlvr",
            ARROW_SCHEMAS["rlvr"],
            [r for r in rows if r.get("ground_truth") is not None],
        )
    if responses:
        outputs["sft"] = (
            "sft",
            ARROW_SCHEMAS["sft"],
            [
                {**r, "messages": [*r["messages"], {"role": "assistant", "content": r["response"]}]}
                for r in rows
            ],
        )
    rows_per_file = int(config.get("rows_per_file", 100_000))
    write_rows_jsonl(run_dir / "rejects.jsonl", rejects)
    summary = {"counts": dict(counts), "datasets": {}}
    for name, (kind, schema, dataset_rows) in outputs.items():
        write_dataset(
            run_dir / name, _table(dataset_rows, schema), {"name": name, "kind": kind, **base}, rows_per_file
        )
        summary["datasets"][name] = {"path": str(run_dir / name), "rows": len(dataset_rows)}
    atomic_write_json(run_dir / "summary.json", summary)
    console.print(
        "synthesis: "
        + ", ".join(f"{name} {info['rows']} rows" for name, info in summary["datasets"].items())
        + f"; {len(rejects)} set aside ("
        + (", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if ":" in k) or "none")
        + ")"
    )
