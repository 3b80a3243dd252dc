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

Rows pass between the steps as Arrow files (`rows.py`) read a batch at a time, and rejects are written as
they happen, so a run over a million personas holds a batch of rows, not the million.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tulu_cli.curate.dataset_dir import write_dataset
from tulu_cli.curate.display import console
from tulu_cli.curate.schemas import ARROW_SCHEMAS
from tulu_cli.errors import StageError
from tulu_cli.generation import SamplingConfig
from tulu_cli.io import atomic_write_json, scratch_dir
from tulu_cli.preferences.models import ChatRequest, build_chat_model
from tulu_cli.preferences.prompts import Prompt, load_prompts
from tulu_cli.preferences.store import ShardStore, Streamed, derived_seed, streamed_fingerprint
from tulu_cli.progress import progress_bars
from tulu_cli.synthesis.augment import AugmentConfig, augment
from tulu_cli.synthesis.generate import PromptTemplate, answer_in_shards
from tulu_cli.synthesis.near_dup import NearDupConfig, near_duplicates
from tulu_cli.synthesis.personas import load_personas
from tulu_cli.synthesis.responses import consensus
from tulu_cli.synthesis.rows import LastTurns, RejectLog, chunked, read_rows, spool_rows

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


def _answer(
    label: str,
    name: str,
    request_shards: Callable[[], Iterable[list[ChatRequest]]],
    count: int,
    spec: dict,
    sampling: SamplingConfig,
    config: dict,
    work: Path,
    describe: dict,
) -> Iterator[list[dict]]:
    """Replies to the `count` shards of requests `request_shards()` yields (`shard_size` prompts or personas
    a shard), a shard at a time, from a work store keyed by everything that determines them (a changed
    setting starts new work). The requests are walked once for the key, once to answer them."""
    seed, shard_size = int(config.get("seed", 0)), int(config.get("shard_size", 64))
    generation = dict(config.get("generation") or {})
    key = streamed_fingerprint(
        {
            "requests": Streamed(request.__dict__ for shard in request_shards() for request in shard),
            "model": spec,
            "sampling": sampling.__dict__,
            "shard_size": shard_size,
            "generation": generation,
            "seed": seed,
        }
    )
    store = ShardStore(work / label / key, {"model": spec, "sampling": sampling.__dict__, **describe})
    return answer_in_shards(
        label, _model_builder(name, spec, generation), request_shards(), count, sampling, store, seed
    )


def persona_prompts(config: dict, work: Path, rejects: RejectLog, counts: Counter) -> Iterator[dict]:
    """Prompts written by the generator for each persona (one shard = `shard_size` personas)."""
    seed, shard_size = int(config.get("seed", 0)), int(config.get("shard_size", 64))
    before = rejects.total
    personas = load_personas(dict(config["personas"]), seed, rejects.add_record)
    counts["personas"], counts["personas_rejected"] = len(personas), rejects.total - before
    if not len(personas):
        raise StageError("personas: no usable persona (see rejects.jsonl)")
    template = PromptTemplate.from_config(dict(config.get("prompt_generation") or {}))
    sampling = _sampling(dict(config.get("sampling") or {}), "sampling")
    starts = range(0, len(personas), shard_size)

    def request_shards() -> Iterator[list[ChatRequest]]:
        for start in starts:
            personas_of_shard = personas.read(start, start + shard_size)
            yield [request for persona in personas_of_shard for request in template.requests(persona, seed)]

    replies = _answer(
        "prompts",
        "model",
        request_shards,
        len(starts),
        dict(config.get("model") or {}),
        sampling,
        config,
        work,
        {"template": template.__dict__},
    )
    with closing(replies):  # the model goes as soon as this generator does, also when a consumer fails
        yield from _persona_rows(replies, starts, personas, shard_size, template, seed, config, rejects, counts)


def _persona_rows(replies: Iterator[list[dict]], starts: range, personas, shard_size: int, template: PromptTemplate,
                  seed: int, config: dict, rejects: RejectLog, counts: Counter) -> Iterator[dict]:
    skill = str(config.get("skill") or "synthetic")
    for shard, start in zip(replies, starts, strict=True):
        reply_of = {reply["key"]: reply for reply in shard}
        for persona in personas.read(start, start + shard_size):
            for request in template.requests(persona, seed):
                reply = reply_of[request.key]
                counts["generated"] += 1
                row_id = f"{skill}-{request.key.replace('/', '-')}"
                if reply.get("error"):
                    rejects.add("prompt_generation", row_id, "request_rejected", reply["error"])
                    continue
                parsed = template.parse(reply["text"], reply["finished"])
                if isinstance(parsed, tuple):
                    rejects.add("prompt_generation", row_id, *parsed, raw=reply["text"])
                    continue
                yield {
                    "id": row_id,
                    "source": f"persona_{skill}",
                    "persona": persona.text,
                    "messages": [{"role": "user", "content": parsed}],
                }


def mix_prompts(config: dict, rejects: RejectLog, counts: Counter) -> Iterator[dict]:
    with progress_bars() as new_bar:
        prompts, mix = load_prompts(dict(config["prompts"]), int(config.get("seed", 0)), new_bar)
    for reject in mix.rejects:
        rejects.add_record({"stage": "prompts", **reject})
    counts["prompts_read"] = sum(source.rows_read for source in mix.sources)
    counts["prompts_rejected"] = len(mix.rejects)
    for prompt in prompts:
        yield {**prompt.to_json(), "persona": None}


def drop_near_duplicates(table: pa.Table, keep: np.ndarray, cfg: dict, rejects: RejectLog) -> None:
    try:
        settings = NearDupConfig(
            **{k: cfg[k] for k in ("ngram", "threshold", "num_perm", "bands") if k in cfg}
        )
    except (TypeError, ValueError) as exc:
        raise StageError(str(exc)) from None
    ids, texts = table.column("id"), LastTurns(table)
    for index, kept, similarity in near_duplicates(texts, settings):
        keep[index] = False
        detail = f"Jaccard {similarity:.3f} with {ids[kept].as_py()}"
        rejects.add("near_dup", ids[index].as_py(), "near_duplicate", detail, texts[index])


def attach_constraints(
    rows: Iterable[dict], cfg: AugmentConfig, seed: int, rejects: RejectLog
) -> Iterator[dict]:
    for row in rows:
        prompt = Prompt(
            row["id"], row["source"], row["messages"], row.get("ground_truth"), row.get("dataset")
        )
        result = augment(prompt, cfg, seed)
        if isinstance(result, str):
            # The row as it came in: without the columns the spool's schema gave it (all null here).
            raw = {key: value for key, value in row.items() if value is not None}
            rejects.add("constraints", row["id"], result, "no constraint could be attached", raw)
            continue
        yield {**result, "persona": row.get("persona")}


def drop_contaminated(table: pa.Table, keep: np.ndarray, cfg: dict, rejects: RejectLog) -> None:
    from tulu_cli.synthesis.decontaminate import contaminated_rows

    hits = contaminated_rows(lambda: read_rows(table, keep), int(keep.sum()), cfg)
    for index in sorted(hits):
        match, row = hits[index], table.slice(index, 1).to_pylist()[0]
        keep[index] = False
        detail = f"{match['eval_set']} instance {match['eval_id']} (score {match['score']})"
        rejects.add("decontaminate", row["id"], "contaminated", detail, row["messages"])


def add_responses(
    table: pa.Table, keep: np.ndarray, cfg: dict, config: dict, work: Path, rejects: RejectLog
) -> Iterator[dict]:
    """The kept rows with `response`; with self-consistency also `ground_truth`/`dataset`; with `verify`
    only the verified ones. A shard (`shard_size` rows) at a time."""
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
    seed, shard_size = int(config.get("seed", 0)), int(config.get("shard_size", 64))
    samples = int(cfg.get("samples", 1))
    agree = dict(cfg.get("self_consistency") or {})
    if samples < 1 or (agree and samples < 2):
        raise StageError(f"responses.samples must be >= 1 (>= 2 with self_consistency), got {samples}")

    def row_shards() -> Iterator[list[dict]]:
        return chunked((row for _, row in read_rows(table, keep)), shard_size)

    def request_shards() -> Iterator[list[ChatRequest]]:
        for shard in row_shards():
            yield [
                ChatRequest(f"{row['id']}/{n}", row["messages"], derived_seed(seed, "response", row["id"], n))
                for row in shard
                for n in range(samples)
            ]

    replies = _answer(
        "responses",
        "responses.model",
        request_shards,
        -(-int(keep.sum()) // shard_size),
        dict(cfg.get("model") or config.get("model") or {}),
        _sampling(cfg, "responses"),
        config,
        work,
        {"samples": samples},
    )
    with closing(replies):  # the model goes as soon as this generator does, also when a consumer fails
        for shard_replies, shard in zip(replies, row_shards(), strict=True):
            reply_of = {reply["key"]: reply for reply in shard_replies}
            answered = _answered(shard, reply_of, samples, agree, rejects)
            yield from _verified(answered, rejects) if cfg.get("verify") else answered


def _answered(
    rows: list[dict], reply_of: dict[str, dict], samples: int, agree: dict, rejects: RejectLog
) -> list[dict]:
    out = []
    for row in rows:
        answers = [reply_of[f"{row['id']}/{n}"] for n in range(samples)]
        refused = next((answer["error"] for answer in answers if answer.get("error")), None)
        if refused is not None:
            rejects.add("responses", row["id"], "request_rejected", refused)
            continue
        texts = [answer["text"] for answer in answers]
        row = {**row, "response": texts[0]}
        if agree:
            verifier = str(agree.get("verifier", "math"))
            result = consensus(texts, verifier, float(agree.get("min_agreement", 0.5)))
            if isinstance(result, tuple):
                rejects.add("self_consistency", row["id"], *result, texts)
                continue
            row.update(
                response=texts[result.sample],
                ground_truth=result.answer,
                dataset=verifier,
                agreement=result.agreement,
            )
        out.append(row)
    return out


def _verified(rows: list[dict], rejects: RejectLog) -> list[dict]:
    # Scored in the verifier pool: a response past the per-row time limit is rejected, never waited on.
    from tulu_cli.rewards.registry import verify_batch

    verdicts = iter(verify_batch([row for row in rows if row.get("ground_truth") is not None]))
    kept = []
    for row in rows:
        if row.get("ground_truth") is not None:
            verdict = next(verdicts)
            if verdict.score < 1.0:
                reason = verdict.error or f"score {verdict.score}"
                rejects.add("verify", row["id"], "not_verified", reason, row["response"])
                continue
        kept.append(row)
    return kept


def _with_response_turn(rows: Iterable[tuple[int, dict]]) -> Iterator[dict]:
    for _, row in rows:
        yield {**row, "messages": [*row["messages"], {"role": "assistant", "content": row["response"]}]}


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
    run_dir.mkdir(parents=True, exist_ok=True)
    with scratch_dir(run_dir, ".synthesis-") as spool:
        rejects = RejectLog(spool / "rejects.jsonl", Counter())
        try:
            _synthesize(config, run_dir, spool, constraints, responses, seed, rejects)
        finally:
            # What was set aside is kept whether the run finishes or stops (its error may point at it).
            rejects.close()
            os.replace(rejects.path, run_dir / "rejects.jsonl")


def _synthesize(config: dict, run_dir: Path, spool: Path, constraints: AugmentConfig | None, responses: dict,
                seed: int, rejects: RejectLog) -> None:
    counts = rejects.counts
    work = run_dir / "work"

    source = (
        persona_prompts(config, work, rejects, counts)
        if config.get("personas")
        else mix_prompts(config, rejects, counts)
    )
    prompts = spool_rows(spool / "prompts.arrow", source)
    counts["prompts"] = prompts.num_rows
    keep = np.ones(prompts.num_rows, bool)
    near_dup = dict(config.get("near_dup") or {})
    if near_dup.pop("enabled", True):
        drop_near_duplicates(prompts, keep, near_dup, rejects)
    rows: Iterable[dict] = (row for _, row in read_rows(prompts, keep))
    if constraints:
        rows = attach_constraints(rows, constraints, seed, rejects)
    table = spool_rows(spool / "rows.arrow", rows)
    keep = np.ones(table.num_rows, bool)
    if config.get("decontaminate"):
        drop_contaminated(table, keep, dict(config["decontaminate"]), rejects)
    if responses:
        table = spool_rows(spool / "answered.arrow", add_responses(table, keep, responses, config, work, rejects))
    elif not keep.all():
        table = spool_rows(spool / "kept.arrow", (row for _, row in read_rows(table, keep)))
    if not table.num_rows:
        raise StageError("no row survived the synthesis (see rejects.jsonl for why)")

    generator = config.get("model") if config.get("personas") else None
    template = (config.get("prompt_generation") or {}).get("template")
    counts.update(rows=table.num_rows, rejected=rejects.total)
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
    # name -> (kind, table, rows of it to write)
    outputs = {"prompts": ("prompts", table.select(PROMPT_SCHEMA.names), None)}
    verifiable = np.flatnonzero(pc.is_valid(table.column("ground_truth")).to_numpy(zero_copy_only=False))
    if len(verifiable):
        outputs["rlvr"] = ("rlvr", table.select(ARROW_SCHEMAS["rlvr"].names), verifiable)
    if responses:
        sft = spool_rows(spool / "sft.arrow", _with_response_turn(read_rows(table)), ARROW_SCHEMAS["sft"])
        outputs["sft"] = ("sft", sft, None)
    rows_per_file = int(config.get("rows_per_file", 100_000))
    summary = {"counts": dict(counts), "datasets": {}}
    for name, (kind, dataset, order) in outputs.items():
        written = write_dataset(
            run_dir / name, dataset, {"name": name, "kind": kind, **base}, rows_per_file, order=order
        )
        summary["datasets"][name] = {"path": str(run_dir / name), "rows": written["rows"]}
    atomic_write_json(run_dir / "summary.json", summary)
    console.print(
        "synthesis: "
        + ", ".join(f"{name} {info['rows']} rows" for name, info in summary["datasets"].items())
        + f"; {rejects.total} set aside ("
        + (", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if ":" in k) or "none")
        + ")"
    )
