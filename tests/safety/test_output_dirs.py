"""metaqa never deletes what it did not write: an output folder is replaced only when it is absent,
empty or marked as metaqa's (`.metaqa-output`), never when it is or holds an input; temp folders
of killed runs are removed at the next start; result files follow the umask."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from metaqa import fileio
from metaqa.config import ConfigError
from metaqa.fileio import write_json
from metaqa.retrieval.index import ThemeIndex
from metaqa.stages import bench, export, prep
from tests.safety.conftest import SAMPLE

BM25 = {"name": "bm25", "k1": 1.5, "b": 0.75, "method": "lucene", "stem": True, "min_score": 0.0}


def test_prep_refuses_a_prep_dir_that_holds_its_input(stage_cfg, user_csv):
    folder = Path(user_csv).parent
    cfg = stage_cfg("prep", ["data=devrev_csv", f"data.path={user_csv}", f"data.prep_dir={folder}"])
    with pytest.raises(ConfigError, match="data.prep_dir.*input"):
        prep.run(cfg)
    assert Path(user_csv).is_file() and sorted(os.listdir(folder)) == ["qa.csv"]


def test_prep_never_replaces_a_folder_of_user_files(stage_cfg, tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("mine")
    for extra in ([], ["overwrite=true"]):  # not even with overwrite=true
        with pytest.raises(ConfigError, match=f"{folder} already holds files that metaqa did not write"):
            prep.run(stage_cfg("prep", [f"data.prep_dir={folder}", *extra]))
    assert (folder / "todo.txt").read_text() == "mine"


def test_prep_reruns_into_its_own_folder_and_marks_it(stage_cfg, tmp_path):
    folder = tmp_path / "shards"
    prep.run(stage_cfg("prep", [f"data.prep_dir={folder}"]))
    assert json.loads((folder / fileio.MARKER).read_text())["stage"] == "prep"
    prep.run(stage_cfg("prep", [f"data.prep_dir={folder}", "data.seed=1"]))  # a rerun replaces it
    assert json.loads((folder / "manifest.json").read_text())["seed"] == 1


def test_export_refuses_export_dir_equal_to_model_dir(stage_cfg, reader):
    weights = reader / "model.safetensors"
    before = weights.stat().st_mtime_ns
    cfg = stage_cfg("export", [f"model_dir={reader}", f"export_dir={reader}", f"export.parity.source={SAMPLE}"])
    with pytest.raises(ConfigError, match="export_dir.*input"):
        export.run(cfg)
    assert weights.stat().st_mtime_ns == before and not list(reader.parent.glob(f"{reader.name}.tmp-*"))


def test_another_stages_folder_needs_overwrite(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    write_json(folder / fileio.MARKER, {"stage": "prep"})
    (folder / "manifest.json").write_text("{}")
    with pytest.raises(ConfigError, match="holds the output of `metaqa prep`.*overwrite=true"):
        fileio.guard_output_dir(folder, field="export_dir", stage="export")
    fileio.guard_output_dir(folder, field="export_dir", stage="export", overwrite=True)
    fileio.guard_output_dir(folder, field="data.prep_dir", stage="prep")  # its own stage: a rerun


def test_bench_refuses_variant_dirs_holding_user_files(stage_cfg, reader, tmp_path):
    out = tmp_path / "bench"
    (out / "onnx" / "fp32").mkdir(parents=True)
    (out / "onnx" / "fp32" / "keep.onnx").write_text("mine")
    cfg = stage_cfg("bench", [f"model_dir={reader}", "variants=[fp32]", "threads=[1]", "limit=2",
                                f"source={SAMPLE}"], out=out)
    with pytest.raises(ConfigError, match="did not write"):
        bench.run(cfg)
    assert (out / "onnx" / "fp32" / "keep.onnx").read_text() == "mine"


def test_index_never_replaces_a_folder_of_user_files(tmp_path):
    folder = tmp_path / "index"
    folder.mkdir()
    (folder / "paper.pdf").write_text("mine")
    with pytest.raises(ConfigError, match="index_dir"):
        ThemeIndex.build_or_load(folder, {"Bees": ["Bees make honey."]}, BM25)
    assert (folder / "paper.pdf").read_text() == "mine"
    rebuilt = tmp_path / "own"
    ThemeIndex.build_or_load(rebuilt, {"Bees": ["Bees make honey."]}, BM25)
    _, built = ThemeIndex.build_or_load(rebuilt, {"Bees": ["Bees make wax."]}, BM25)  # its own: rebuilt
    assert built and json.loads((rebuilt / fileio.MARKER).read_text())["stage"] == "index"


def dead_pid() -> int:
    """The pid of a process that really died by SIGKILL."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.pid


def test_temp_dirs_of_killed_runs_are_removed_at_the_next_start(stage_cfg, tmp_path):
    folder = tmp_path / "shards"
    pid = dead_pid()
    for leftover in (f"shards.tmp-{pid}", f"shards.old-{pid}"):
        (tmp_path / leftover / "train").mkdir(parents=True)
    live = tmp_path / f"shards.tmp-{os.getppid()}"  # another running process's build: kept
    live.mkdir()
    prep.run(stage_cfg("prep", [f"data.prep_dir={folder}"]))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("shards")) == ["shards", live.name]


def test_result_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "summary.json", {"status": "ok"})
    finally:
        os.umask(old)
    assert (tmp_path / "summary.json").stat().st_mode & 0o777 == 0o644
