"""``erasediff audit`` usage errors: one clear line, exit code 2, nothing written."""

from click.testing import CliRunner

from erasediff.cli import main

from .conftest import drawn_split_record, tiny_model


def _run(*args):
    return CliRunner().invoke(main, ["audit", *[str(a) for a in args], "--quiet"])


def _assert_usage_error(result, out, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]
    assert not out.exists() and not out.parent.exists()


def test_unknown_config_key(tmp_path):
    config = tmp_path / "audit.yaml"
    config.write_text("forget_clas: [3]\n")
    out = tmp_path / "runs" / "audit"
    _assert_usage_error(_run("--config", config, "--out", out), out, "unknown config key 'forget_clas'",
                        "allowed keys:", "forget_classes")


def test_missing_model(tmp_path):
    out = tmp_path / "runs" / "audit"
    _assert_usage_error(_run("--model", tmp_path / "no-model", "--out", out), out, "no-model", "not found")


def test_forget_class_the_model_does_not_have(tmp_path):
    tiny_model().save(tmp_path / "model", drawn_split_record())
    out = tmp_path / "runs" / "audit"
    _assert_usage_error(_run("--model", tmp_path / "model", "--forget-class", 12, "--out", out), out,
                        "forget class 12 is out of range", "0..9")


def test_unknown_method_and_attack(tmp_path):
    tiny_model().save(tmp_path / "model", drawn_split_record())
    out = tmp_path / "runs" / "audit"
    _assert_usage_error(_run("--model", tmp_path / "model", "--method", "magic", "--out", out), out, "magic")
    _assert_usage_error(_run("--model", tmp_path / "model", "--attacks", "loss,nope", "--out", out), out, "nope")


def test_existing_output_folder(tmp_path):
    out = tmp_path / "runs" / "audit"
    out.mkdir(parents=True)
    result = _run("--out", out)
    assert result.exit_code == 2 and "already exists" in result.output and "--force" in result.output
    assert list(out.iterdir()) == []


def test_report_of_a_missing_or_foreign_file(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path / "results.json")])
    assert result.exit_code == 2 and "not found" in result.output
    (tmp_path / "other.json").write_text("[1, 2]")
    result = CliRunner().invoke(main, ["report", str(tmp_path / "other.json")])
    assert result.exit_code == 2 and "not an erasediff results document" in result.output
