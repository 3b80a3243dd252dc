"""The summaries `tulu` prints around a stage."""

from __future__ import annotations

from tulu_cli.report import show_failure, show_success

GLOO_ERROR = ("RuntimeError: [/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by "
              "peer [127.0.0.1]:29521")


def test_failure_panel_shows_messages_with_brackets_verbatim(tmp_path, capsys):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "failure.txt").write_text(GLOO_ERROR + "\n\ntraceback...")
    show_failure("sft", tmp_path, 1)
    shown = " ".join(capsys.readouterr().out.split())
    assert "tulu sft failed (exit code 1)" in shown
    assert "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:534]" in shown.replace("│ │", "")
    assert "[127.0.0.1]:29521" in shown


def test_failure_panel_falls_back_to_the_last_log_line(tmp_path, capsys):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "stage.log").write_text("starting\n[rank1]: [/x/y] broke\n\n")
    show_failure("dpo", tmp_path, 2)
    assert "[rank1]: [/x/y] broke" in capsys.readouterr().out


def test_success_line_shows_a_run_dir_with_brackets(tmp_path, capsys):
    show_success("sft", tmp_path / "[/odd]")
    assert "[/odd]" in capsys.readouterr().out
