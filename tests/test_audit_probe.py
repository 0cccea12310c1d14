"""The audit's probe (audit/probe.py) runs the audit's own loop: it answers as the full audit does, and scores the
fixed models once."""

from __future__ import annotations

import json

import pytest

from audit.config import load_config
from audit.probe import AuditProbe
from audit.probes import PROBES
from diffusion.loading import load_model

pytestmark = pytest.mark.slow  # reuses the control workspace and runs the probe twice (about a minute)


def _checks(checks: list[dict]) -> tuple[dict[str, str], dict[str, float]]:
    """(name -> decision, name -> estimate where there is one)."""
    return ({c["name"]: c["decision"] for c in checks},
            {c["name"]: c["estimate"] for c in checks if c["estimate"] is not None})


def test_probe_decides_as_the_full_audit_and_reuses_the_fixed_models_scores(
    control_workspace, noop_audit, retrained_audit, tmp_path
):
    workspace = control_workspace
    config = load_config(workspace["config"], {
        "model": str(workspace["original"]), "unlearned": str(workspace["original"]),
        "retrained": [str(workspace["retrained_b"]), str(workspace["retrained_c"])],
        "out": str(tmp_path / "unused"), "quiet": True,
    })
    probe = AuditProbe(config, probes=list(PROBES))  # every probe: the whole audit's checks

    noop = probe(probe.fixed["original"])
    after_first, generated_first = len(probe.memo), len(probe.generation_memo)
    retrained = probe(load_model(workspace["retrained_a"]))

    for result, (out, _) in ((noop, noop_audit), (retrained, retrained_audit)):
        decisions, estimates = _checks([c.to_json() for c in result.checks])
        audited = _checks(json.loads((out / "results.json").read_text())["checks"])
        assert decisions == audited[0] and estimates == pytest.approx(audited[1], rel=1e-9)
    assert not noop.certified and not noop.unrefuted
    assert retrained.unrefuted and not any(d == "FAIL" for d in retrained.decisions("membership").values())
    # 5 attacks x 2 conditionings: the second probe scored only its own model (the no-op's was the original's)
    assert after_first == 5 * 2 * 3
    assert len(probe.memo) == after_first + 5 * 2
    assert (generated_first, len(probe.generation_memo)) == (4, 5)  # generation and probes: the fixed models once
    assert set(retrained.membership()) == {"label", "inverted"}
