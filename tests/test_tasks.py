"""The task layer's compatibility promises: QA run folders and sweeps from before tasks existed still resume,
and a QA report's rerun command survives list-valued options of other tasks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import FinishedRun
from regtune.reporting.report import command_line
from regtune.training.trainer import check_run_dir, train_model


def test_a_run_folder_from_before_tasks_resumes_as_qa(finished_run: FinishedRun, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(finished_run.dir, old)
    saved = json.loads((old / "config.json").read_text())
    assert saved["config"].pop("task") == "qa"  # what a run folder written before tasks looks like
    saved["config"]["output_dir"] = str(old)
    (old / "config.json").write_text(json.dumps(saved))
    config = type(finished_run.config).from_dict({**finished_run.config.to_dict(), "output_dir": str(old)})
    assert check_run_dir(old, config, resume=True) == finished_run.metrics
    # The finished run is recognised, not retrained: the saved metrics come back as they are.
    assert train_model(config, resume=True, progress=False) == finished_run.metrics


def test_command_line_joins_list_options() -> None:
    sweep = {
        "train_file": "t.tsv",
        "dev_files": ["d.tsv"],
        "grid": {"seed": [1, 2], "num_registers": [0, 8]},
        "options": {"task": "classification", "text_columns": ["premise", "hypothesis"]},
    }
    line = command_line(sweep)
    assert "--text-column premise,hypothesis" in line and "--task classification" in line
    assert "--registers 0,8 --seeds 1,2" in line
