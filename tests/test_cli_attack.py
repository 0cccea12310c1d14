import csv
import json

from click.testing import CliRunner

from diffusion.splits import ForgetSpec
from erasediff.cli import main

from .conftest import drawn_split_record, tiny_model


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_attack_writes_scores_and_metrics(tmp_path, digits, splits):
    model = tiny_model()
    model.save(tmp_path / "model", drawn_split_record())
    fingerprint = model.fingerprint()
    out = tmp_path / "out"
    result = invoke("attack", "--model", tmp_path / "model", "--attacks", "pia,loss", "--forget-class", 3,
                    "--out", out, "--quiet", "--batch-size", 50)
    assert result.exit_code == 0, result.output
    assert "pia" in result.output and str(out) in result.output
    spec = ForgetSpec(classes=(3,))
    num_forget = len(spec.forget_ids(digits.labels, splits))
    num_heldout = len(spec.heldout_ids(digits.labels, splits))
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["pia", "loss"]
    for name in ("pia", "loss"):
        entry = metrics[name]
        calls = 2 if name == "pia" else 3 * len(entry["params"]["timesteps"])  # the fitted band, 3 noises each
        for key in ("auc", "auc_ci", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "calls_per_sample", "seconds"):
            assert key in entry, key
        assert entry["calls_per_sample"] == calls and entry["num_members"] == num_forget
        with open(out / "scores" / f"{name}.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert list(rows[0]) == ["sample_id", "split", "is_member", "model", "conditioning", "score",
                                 "calibrated_score"]
        assert sum(r["is_member"] == "1" for r in rows) == num_forget and len(rows) == num_forget + num_heldout
        assert {r["split"] for r in rows} == {"forget", "heldout"}
        # the timesteps were fitted on calibration images of other classes, none of them scored
        run = json.loads((out / "run.json").read_text())
        calibration = set(run["calibration"]["member_ids"]) | set(run["calibration"]["nonmember_ids"])
        assert len(calibration) == 200 and not calibration & {int(r["sample_id"]) for r in rows}
        assert "chosen" in entry["params"]["calibration"]
        if name == "pia":  # plain numbers: minus a distance (the fitted loss is minus a standardised loss)
            assert all(float(r["score"]) <= 0 for r in rows)
    run = json.loads((out / "run.json").read_text())
    assert run["forget"]["classes"] == [3] and run["model_fingerprint"] == fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out"]
    fixed = invoke("attack", "--model", tmp_path / "model", "--attacks", "pia", "--calibration-images", 0,
                   "--out", tmp_path / "fixed", "--quiet")
    assert fixed.exit_code == 0, fixed.output
    entry = json.loads((tmp_path / "fixed" / "metrics.json").read_text())["pia"]
    assert entry["params"]["timestep"] == 200 and "calibration" not in entry["params"]


def test_attack_bad_input(tmp_path):
    tiny_model().save(tmp_path / "model", drawn_split_record())
    out = tmp_path / "out"
    result = invoke("attack", "--model", tmp_path / "model", "--attacks", "loss,lira", "--out", out)
    assert result.exit_code == 2
    assert "unknown attack 'lira'; expected one of: clid, loss, noise_aggregation" in result.output
    result = invoke("attack", "--model", tmp_path / "model", "--attacks", "secmi_nn", "--calibration-images", 0,
                    "--out", out)
    assert result.exit_code == 2 and "secmi_nn learn from a calibration set" in result.output
    assert not out.exists()
    assert not out.exists()
    result = invoke("attack", "--model", tmp_path / "nope", "--out", out)
    assert result.exit_code == 2 and "not found" in result.output and not out.exists()
    result = invoke("attack", "--model", tmp_path / "model", "--forget-class", 12, "--out", out)
    assert result.exit_code == 2 and "forget class 12 is out of range" in result.output and not out.exists()
    out.mkdir()
    result = invoke("attack", "--model", tmp_path / "model", "--out", out)
    assert result.exit_code == 2 and "already exists" in result.output
