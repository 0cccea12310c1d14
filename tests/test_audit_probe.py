"""The audit's probe (audit/probe.py) answers as the full audit does, and scores the fixed models once."""

from __future__ import annotations

import json

import pytest

from audit.config import load_config
from audit.probe import AuditProbe
from diffusion.loading import load_model

pytestmark = pytest.mark.slow  # reuses the control workspace and runs the probe twice (about a minute)


def _probed(results: dict) -> dict[str, str]:
    return {c["name"]: c["decision"] for c in results["checks"]
            if c["name"].startswith(("membership", "audit_power", "forgotten_generation", "retained_"))}


def test_probe_decides_as_the_full_audit_and_reuses_the_fixed_models_scores(
    control_workspace, noop_audit, retrained_audit, tmp_path
):
    workspace = control_workspace
    config = load_config(workspace["config"], {
        "model": str(workspace["original"]), "unlearned": str(workspace["original"]),
        "retrained": [str(workspace["retrained_b"]), str(workspace["retrained_c"])],
        "out": str(tmp_path / "unused"), "quiet": True,
    })
    probe = AuditProbe(config)

    noop = probe(probe.fixed["original"])
    after_first = len(probe.memo)
    retrained = probe(load_model(workspace["retrained_a"]))

    for result, (out, _) in ((noop, noop_audit), (retrained, retrained_audit)):
        assert result.decisions() == _probed(json.loads((out / "results.json").read_text()))
    assert not noop.certified and not noop.unrefuted
    assert retrained.unrefuted and not any(d == "FAIL" for d in retrained.decisions("membership").values())
    # 5 attacks x 2 conditionings: the second probe scored only its own model (the no-op's was the original's)
    assert after_first == 5 * 2 * 3
    assert len(probe.memo) == after_first + 5 * 2
    assert set(retrained.membership()) == {"label", "inverted"}
