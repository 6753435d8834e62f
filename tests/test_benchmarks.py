"""The benchmark scripts are run by hand for hours, so a broken import (a renamed function of the package)
would surface only then: each is imported here (their work sits behind ``if __name__ == "__main__"``)
and its argument parser must answer --help. Their shared entry point reports a user's mistake in one line."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def test_there_are_benchmark_scripts():
    assert len(SCRIPTS) >= 5, SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_a_benchmark_script_imports_and_answers_help(script, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCH))  # as `python benchmarks/x.py` does, for benchmarks/_bench.py
    spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [script.name, "--help"])
    with pytest.raises(SystemExit) as exit_:
        module.main()
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_a_benchmark_reports_a_missing_dataset_in_one_line(tmp_path):
    missing = tmp_path / "no-such-folder"  # an image folder: nothing to download, on any machine
    proc = subprocess.run([sys.executable, str(BENCH / "reference_fid.py"), "--datasets", f"folder:{missing}",
                           "--features", "inception", "--ns", "10", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: image folder {missing} does not exist; check the path"]


def test_a_stopped_benchmark_exits_130_without_a_traceback(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCH))
    from _bench import run_main

    def stopped():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_:
        run_main(stopped)
    assert exit_.value.code == 130 and capsys.readouterr().err == "stopped\n"
