"""The end of a training run, after `final/` is saved: its model card, then the push when asked for."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def release_final(accelerator, cfg: DictConfig, run_dir: Path) -> None:
    """On the main process: write `final/README.md`, then upload `final/` when `hub.push` is true.
    Every rank may call it; the others have nothing to do."""
    from tulu_cli.publish.card import write_model_card

    if not accelerator.is_main_process:
        return
    card = write_model_card(run_dir)
    accelerator.print(f"model card: {card}")
    hub = OmegaConf.to_container(cfg.hub, resolve=True) if cfg.get("hub") else {}
    if hub.get("push"):
        from tulu_cli.publish.push import push_final

        url = push_final(run_dir / "final", hub, str(cfg.stage))
        accelerator.print(f"pushed {run_dir / 'final'} to the hub: {url}")
