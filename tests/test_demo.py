import json

from ncollapse.cli import main


def test_demo_writes_trajectory(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--epochs", "10"]) == 0
    data = json.loads((tmp_path / "trajectory.json").read_text())
    epochs = [row["epoch"] for row in data["trajectory"]]
    assert epochs == [5, 10]
    assert data["class_counts"][0] > data["class_counts"][-1]
    assert data["trajectory"][-1]["nc1"] < data["trajectory"][0]["nc1"]
    assert "test_acc" in capsys.readouterr().out
