"""``sepconv train --average-from``: epoch-end snapshots and their average, in the run itself."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from sepconv_cli.cli import cli
from sepconv_cli.models.registry import load_weights, read_weights_file
from sepconv_cli.training import train
from tests.test_train import TINY_ARGS, make_cache, tiny_config


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cache(tmp_path_factory.mktemp("data") / "cache")


def states(paths: list[Path]) -> list[dict[str, torch.Tensor]]:
    return [load_weights(path).state_dict() for path in paths]


def test_a_run_writes_snapshots_from_the_step_asked_and_their_average(cache: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # 4 steps an epoch: epoch ends at steps 4, 8 and 12; from step 6 on only 8 and 12 count.
    result = CliRunner().invoke(cli, ["train", *TINY_ARGS, "--data", str(cache), "--max-steps", "12", "--val-fraction",
                                      "0.2", "--lr", "3e-3", "--ema", "0.9", "--average-from", "6", "--out", str(run)])
    assert result.exit_code == 0, result.output
    snaps = sorted((run / "snapshots").glob("*.pt"))
    assert [p.name for p in snaps] == ["step0000008.pt", "step0000012.pt"]
    last, final = states([snaps[-1], run / "weights.pt"])
    assert all(torch.equal(last[k], final[k]) for k in last)  # the step-12 snapshot is the exported average
    first = states([snaps[0]])[0]
    assert any(not torch.equal(first[k], last[k]) for k in last)
    averaged = states([run / "averaged.pt"])[0]
    for key, value in averaged.items():
        if value.is_floating_point():
            mean = (first[key].double() + last[key].double()) / 2
            # Large tensors go through int8 on saving, so the check allows one quantisation step.
            step = float(mean.abs().max()) / 127 + 1e-7
            assert float((value.double() - mean).abs().max()) <= step, key
    assert read_weights_file(run / "averaged.pt")["metadata"]["averaged_steps"] == [8, 12]


def test_without_the_option_there_are_no_snapshots(cache: Path, tmp_path: Path) -> None:
    train(tiny_config(cache, max_steps=8), tmp_path / "run")
    assert not (tmp_path / "run" / "snapshots").exists() and not (tmp_path / "run" / "averaged.pt").exists()


def test_a_resume_drops_snapshots_written_after_its_checkpoint(cache: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny_config(cache, max_steps=8, average_from=0), run)
    # As if the run had written a snapshot and died before its checkpoint: the resume redoes that step.
    shutil.copy(run / "snapshots" / "step0000008.pt", run / "snapshots" / "step0000010.pt")
    result = CliRunner().invoke(cli, ["train", "--resume", str(run), "--max-steps", "12"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (run / "snapshots").glob("*.pt"))
    assert names == ["step0000004.pt", "step0000008.pt", "step0000012.pt"]
    assert read_weights_file(run / "averaged.pt")["metadata"]["averaged_steps"] == [4, 8, 12]
