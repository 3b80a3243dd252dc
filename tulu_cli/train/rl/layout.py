"""Where RLVR runs on GPUs: which GPUs train, which generate, and whether that fits 8-GPU nodes
(shown by `tulu rlvr --dry-run`)."""

from __future__ import annotations

from dataclasses import dataclass

# The vLLM versions the `vllm` extra allows: the code is written against 0.31's API, which 0.30, 0.32,
# 0.33 and 0.34 share for every call it makes (0.34 adds one argument the colocated engine sets).
VLLM_REQUIREMENT = "vllm>=0.30,<0.35"
GPUS_PER_NODE = 8


@dataclass(frozen=True)
class Layout:
    mode: str
    training_nodes: int
    training_gpus: int
    engines: int
    tensor_parallel_size: int
    generation_gpus: int
    # GPUs used only for generation (server mode); colocated engines share the training GPUs.
    dedicated_generation_gpus: int
    problems: tuple[str, ...]

    def lines(self) -> list[str]:
        total = self.training_gpus + self.dedicated_generation_gpus
        lines = [f"vLLM ({VLLM_REQUIREMENT}), mode {self.mode}"]
        lines.append(f"training: {self.training_nodes} node(s), {self.training_gpus} GPU ranks (ZeRO-3 learner)")
        if self.mode == "colocate":
            lines.append(f"generation: {self.engines} engine(s) of tensor parallel size {self.tensor_parallel_size} "
                         f"on the same {self.training_gpus} GPUs (asleep while training)")
        else:
            gpus = self.dedicated_generation_gpus
            if self.training_nodes == 1 and self.training_gpus + gpus <= GPUS_PER_NODE:
                where = "beside the training ranks on their node"
            else:
                where = f"on {-(-gpus // GPUS_PER_NODE)} node(s) of their own"
            lines.append(f"generation: {self.engines} server(s) x tensor parallel size {self.tensor_parallel_size} "
                         f"= {gpus} dedicated GPU(s) {where}")
        lines.append(f"GPUs in all: {total}; weights: one parameter at a time from the learner's main process")
        return lines + [f"problem: {problem}" for problem in self.problems]


def rlvr_layout(resolved: dict) -> Layout | None:
    """The layout of a resolved `tulu rlvr` config, or None when it does not generate with vLLM."""
    generation, launcher = resolved["generation"], resolved["launcher"]
    if generation.get("backend") != "vllm":
        return None
    vllm = generation["vllm"]
    nodes, per_node = int(launcher["num_machines"]), int(launcher["processes_per_machine"])
    ranks = nodes * per_node
    problems = []
    if per_node > GPUS_PER_NODE:
        problems.append(f"{per_node} training ranks per node, more than the node's {GPUS_PER_NODE} GPUs")
    if vllm["mode"] == "colocate":
        tp = int(vllm["tensor_parallel_size"])
        if per_node % tp:
            problems.append(f"tensor_parallel_size={tp} must divide the {per_node} ranks of a node")
        return Layout("colocate", nodes, ranks, ranks // tp, tp, ranks, 0, tuple(problems))
    tp, servers = int(vllm["server_tensor_parallel_size"]), len(vllm.get("servers") or [])
    if GPUS_PER_NODE % tp:
        problems.append(f"server_tensor_parallel_size={tp} does not fit evenly on {GPUS_PER_NODE}-GPU nodes")
    if not servers:
        problems.append("generation.vllm.servers lists no server")
    dedicated = servers * tp
    return Layout("server", nodes, ranks, servers, tp, dedicated, dedicated, tuple(problems))


def show_layout(resolved: dict, console) -> None:
    layout = rlvr_layout(resolved)
    if layout is None:
        console.print("generation: hf (the learner samples; no vLLM)")
        return
    console.print("[bold]GPU layout[/bold]")
    for line in layout.lines():
        print(line, flush=True)
