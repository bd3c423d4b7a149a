"""Benchmarks find the reference readers: the full-data run first, else the longest budgeted one
(warm starts counting the steps they began from)."""
from metaqa.models.reference import reference_reader


def make(root, name):
    reader = root / "outputs" / "readers" / name / "reader"
    reader.mkdir(parents=True)
    (reader / "config.json").write_text("{}")


def test_full_run_wins_then_the_longest_budgeted_run(tmp_path):
    assert reference_reader("minilm_squad2", tmp_path) is None
    make(tmp_path, "minilm_squad2_steps500")
    make(tmp_path, "minilm_squad2_steps2000")
    make(tmp_path, "minilm_squad2_steps2000_first100")  # a smoke run is never a reference
    readers = tmp_path / "outputs" / "readers"
    assert reference_reader("minilm_squad2", tmp_path) == readers / "minilm_squad2_steps2000" / "reader"
    assert reference_reader("minilm_squad2", tmp_path, onnx=True) is None
    (readers / "minilm_squad2_steps2000_int8").mkdir()
    assert reference_reader("minilm_squad2", tmp_path, onnx=True) == readers / "minilm_squad2_steps2000_int8"
    # a warm start counts the steps of the run it began from: 2000 + 1500 beats 3000
    make(tmp_path, "minilm_squad2_steps3000")
    make(tmp_path, "minilm_squad2_steps1500_from_minilm_squad2_steps2000")
    make(tmp_path, "minilm_squad2_first64_steps4_from_minilm_squad2_steps2000")  # smoke, warm-started
    assert reference_reader("minilm_squad2", tmp_path) == (
        readers / "minilm_squad2_steps1500_from_minilm_squad2_steps2000" / "reader")
    make(tmp_path, "minilm_squad2")
    assert reference_reader("minilm_squad2", tmp_path) == readers / "minilm_squad2" / "reader"
