"""The report of schema 2 results documents: the two real example audits render every section, and the page shows
what the document says (the verdict re-checked, the exposed images in order, histograms under the class label only).

The examples are the known-answer audits of tests/conftest.py on a 3-class digits model: ``noop`` (the original
presented as unlearned: FAIL) and ``retr`` (a model retrained from scratch: never FAIL). Each is copied into the
test's own folder before rendering.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from markupsafe import escape

from erasediff.cli import main
from reports import figures, write_report

pytestmark = pytest.mark.slow  # the example audits train four small models (shared with test_audit_controls)
SECTIONS = ("checks", "unlearning", "membership", "exposed", "extraction", "samples", "resurrection", "utility",
            "provenance")


@pytest.fixture
def examples(noop_audit, retrained_audit) -> dict[str, Path]:
    return {"noop": noop_audit[0], "retr": retrained_audit[0]}


def _copy(examples: dict[str, Path], tmp_path: Path, name: str) -> Path:
    """The example ``name`` copied into ``tmp_path``; its results.json path."""
    shutil.copytree(examples[name], tmp_path / name, ignore=shutil.ignore_patterns("report.html"))
    return tmp_path / name / "results.json"


def _edit(path: Path, change) -> dict:
    results = json.loads(path.read_text())
    change(results)
    path.write_text(json.dumps(results))
    return results


def _report(path: Path):
    return CliRunner().invoke(main, ["report", str(path)])


@pytest.mark.parametrize("name", ["noop", "retr"])
def test_the_examples_render_every_section(examples, tmp_path, name):
    path = _copy(examples, tmp_path, name)
    results = json.loads(path.read_text())
    assert results["verdict"] != {"noop": "PASS", "retr": "FAIL"}[name]
    html = write_report(path).read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in html, section
    verdict = results["verdict"]
    assert f'<span class="verdict {verdict}">{verdict}</span>' in html
    assert str(escape(results["power"]["statement"])) in html
    for check in results["checks"]:
        assert f"<code>{check['name']}</code>" in html
    attacks = results["membership"]["attacks"]
    for attack in attacks:
        assert f"<h3>{attack}</h3>" in html
    # per attack: the forest of conditionings, the ROC, the histograms; the checks' forest; the per-class bars
    assert html.count("<svg") == 3 * len(attacks) + 2 + bool(results["resurrection"])  # + the relearning curves
    assert html.count('src="data:image/png;base64,') == len(results["images"])
    for role in results["models"]:
        assert re.search(rf"<tr><td>{role}</td>\s*<td><img src=\"data:image/png", html), role
    assert "None" not in html and "http://" not in re.sub(r'xmlns(:\w+)?="http[^"]*"', "", html)


def test_a_schema_1_document_is_refused_in_one_line(examples, tmp_path):
    path = _copy(examples, tmp_path, "noop")
    _edit(path, lambda r: r.update(schema_version=1))
    result = _report(path)
    assert result.exit_code == 2
    assert result.output == (f"error: '{path}' is a schema 1 results document (erasediff before the three-valued "
                             "verdict); this erasediff reads schema 3 only: re-run the audit\n")


@pytest.mark.parametrize("name", ["noop", "retr"])
def test_a_verdict_that_disagrees_with_the_checks_is_refused(examples, tmp_path, name):
    path = _copy(examples, tmp_path, name)
    verdict = json.loads(path.read_text())["verdict"]
    wrong = "FAIL" if verdict == "PASS" else "PASS"
    _edit(path, lambda r: r.update(verdict=wrong))
    result = _report(path)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert f"says verdict '{wrong}' but its checks give {verdict}" in result.output
    assert not (path.parent / "report.html").exists()


def test_the_exposed_table_lists_the_ids_in_order(examples, tmp_path):
    path = _copy(examples, tmp_path, "noop")
    exposed = json.loads(path.read_text())["membership"]["exposed_forget_images"]
    assert len(exposed) > 1
    html = write_report(path).read_text()
    table = html[html.index('<table class="exposed"'):]
    table = table[:table.index("</table>")]
    row = re.search(r"<tr><th>sample id</th>(.*?)</tr>", table).group(1)
    assert [int(i) for i in re.findall(r"<td>(\d+)</td>", row)] == [e["sample_id"] for e in exposed]
    assert table.index("<img") < table.index("sample id")  # the strip heads the columns


def test_the_histograms_use_the_label_rows_only(examples, tmp_path, monkeypatch):
    path = _copy(examples, tmp_path, "retr")
    table = path.parent / "scores" / "loss.csv"
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["conditioning"] for row in rows} == {"label", "inverted"}
    for row in rows:  # scores no label row has: they must not reach the histograms
        if row["conditioning"] != "label":
            row["score"] = "1e9"
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    drawn = {}
    draw = figures.score_histograms

    def record(scores, attack):
        drawn[attack] = scores
        return draw(scores, attack)

    monkeypatch.setattr(figures, "score_histograms", record)
    write_report(path)
    for role, splits in drawn["loss"].items():
        for split, values in splits.items():
            expected = [float(r["score"]) for r in rows
                        if (r["model"], r["split"], r["conditioning"]) == (role, split, "label")]
            np.testing.assert_array_equal(values, expected)
    assert set(drawn["loss"]) == {row["model"] for row in rows}


def test_user_text_stays_escaped(examples, tmp_path):
    path = _copy(examples, tmp_path, "retr")
    _edit(path, lambda r: (r["power"].update(statement="<img src=x onerror=alert(1)>"),
                           r["membership"]["conditionings"].append("<b>x</b>"),
                           r["membership"]["combined"].update({"<b>x</b>": {"decision": "INCONCLUSIVE",
                                                                         "power": False, "vetoes": [],
                                                                         "note": "<b>x</b>"}})))
    html = write_report(path).read_text()
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<b>x</b>" not in html


def test_any_number_of_references_gets_its_own_green():
    colors = [figures.ROLE_COLORS[f"reference_{k}"] for k in range(1, 13)]
    assert len(set(colors)) == len(colors)
    for color in colors:
        red, green, blue = (int(color[i:i + 2], 16) for i in (1, 3, 5))
        assert green > red and green > blue, color
    assert figures.ROLE_COLORS["original"] != figures.ROLE_COLORS["unlearned"]
    with pytest.raises(KeyError):
        figures.ROLE_COLORS["retrained"]
