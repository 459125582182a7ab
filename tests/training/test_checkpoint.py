"""save_checkpoint / list_checkpoints: atomic re-saves, crash-safe deletion, rotation that keeps the new one."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from unittest import mock

import pytest

from inf_embed.training import checkpoint as ckpt


class _FakeModel:
    """Stands in for InfEmbed: ``save_pretrained`` writes one file."""

    def save_pretrained(self, path: str) -> None:
        os.makedirs(path)
        Path(path, "weights.bin").write_text("w")


def _save(folder: Path, step: int, marker: int = 0, **kwargs: object) -> str:
    return ckpt.save_checkpoint(folder, step, _FakeModel(), {"marker": marker}, {}, **kwargs)


def test_rotation_never_deletes_the_checkpoint_just_written(tmp_path: Path) -> None:
    _save(tmp_path, 1000)  # a stale checkpoint of an earlier run, with a higher step
    path = _save(tmp_path, 100, total_limit=1)
    assert os.path.isfile(os.path.join(path, ckpt.STATE_FILE))
    assert ckpt.latest_checkpoint(tmp_path) == path


def test_rotation_keeps_the_newest(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        _save(tmp_path, step, total_limit=2)
    assert [step for step, _ in ckpt.list_checkpoints(tmp_path)] == [2, 3]


@pytest.mark.parametrize("limit", [0, -1, True, 1.5])
def test_invalid_total_limit_is_rejected_before_writing(tmp_path: Path, limit: object) -> None:
    with pytest.raises(ValueError, match="total_limit"):
        _save(tmp_path, 1, total_limit=limit)
    assert not os.path.exists(tmp_path / "checkpoint-1")


@pytest.mark.parametrize("fail_at", [1, 2])
def test_failed_resave_of_a_step_keeps_the_previous_checkpoint(tmp_path: Path, fail_at: int) -> None:
    _save(tmp_path, 5, marker=1)
    real_replace, calls = os.replace, []

    def replace(src: str, dst: str) -> None:
        calls.append(src)
        if len(calls) == fail_at:
            raise KeyboardInterrupt  # an interruption at the first or the second rename
        real_replace(src, dst)

    with mock.patch.object(ckpt.os, "replace", side_effect=replace), pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 5, marker=2)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-5"]
    assert ckpt.load_trainer_state(ckpt.latest_checkpoint(tmp_path))["marker"] == 1


def test_checkpoint_moved_aside_by_an_interrupted_resave_is_still_found(tmp_path: Path) -> None:
    _save(tmp_path, 5, marker=1)
    os.rename(tmp_path / "checkpoint-5", tmp_path / ".checkpoint-5.old-x")  # killed between the two renames
    found = ckpt.latest_checkpoint(tmp_path)
    assert found is not None and ckpt.load_trainer_state(found)["marker"] == 1
    _save(tmp_path, 6, total_limit=1)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-6"]


def test_resave_replaces_the_step(tmp_path: Path) -> None:
    _save(tmp_path, 5, marker=1)
    _save(tmp_path, 5, marker=2)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-5"]
    assert ckpt.load_trainer_state(tmp_path / "checkpoint-5")["marker"] == 2


def test_a_deletion_interrupted_midway_leaves_no_complete_looking_folder(tmp_path: Path) -> None:
    _save(tmp_path, 1, marker=1)
    real_rmtree = shutil.rmtree

    def rmtree(path: str, ignore_errors: bool = False) -> None:
        real_rmtree(os.path.join(path, ckpt.MODEL_FOLDER))  # the model goes first, then the process dies
        raise KeyboardInterrupt

    with mock.patch.object(ckpt.shutil, "rmtree", side_effect=rmtree), pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 2, total_limit=1)
    assert ckpt.latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    assert [step for step, _ in ckpt.list_checkpoints(tmp_path)] == [2]  # the half-deleted checkpoint-1 is not listed


def test_a_checkpoint_folder_has_the_permissions_of_a_plain_folder(tmp_path):
    umask = os.umask(0o022)
    try:
        path = _save(tmp_path, 1)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(os.path.join(path, "trainer_state.json")).st_mode) == 0o644
