"""Training-data extraction as an audit probe: does a model regenerate its forget images more often than the
references do (Carlini et al., "Extracting Training Data from Diffusion Models", USENIX Security 2023)?"""

from __future__ import annotations

from pathlib import Path

from attacks.extraction import extract_training_data
from diffusion.model import DiffusionModel
from reports.results import FAIL, PASS, Check

from ..config import AuditConfig, Thresholds
from ..images import save_pairs
from ..subjects import AuditSubjects
from .base import PROBES, Probe


@PROBES.register
class ExtractionProbe(Probe):
    """Generate ``extraction_samples_per_class`` images of each forgotten class (DDIM, ``eval_steps``) and flag the
    copies of training members (:func:`attacks.extraction.extract_training_data`); the section counts the forget
    images among them, at the audit's alpha and at the paper's. The check: no more forget images extracted than
    by the reference that extracts most, plus ``thresholds.extraction_margin``."""

    name = "extraction"

    def run(self, role: str, model: DiffusionModel, subjects: AuditSubjects, config: AuditConfig,
            images_dir: Path) -> tuple[dict, dict[str, str]]:
        forget_ids = set(subjects.task.forget.ids.tolist())
        found = extract_training_data(model, subjects.training_members,
                                      subjects.forgotten_classes(), per_class=config.extraction_samples_per_class,
                                      seed=config.seed, steps=config.eval_steps,
                                      wordings=subjects.dataset.class_wordings)
        section = found.to_dict()
        section["num_forget_extracted"] = len(forget_ids & set(found.extracted_training_ids))
        at_paper = section["at_paper_alpha"]
        at_paper["num_forget_extracted"] = len(forget_ids & set(at_paper["extracted_training_ids"]))
        copies, originals = found.pairs()
        images = {}
        if len(copies):
            images[f"{role}_extraction"] = save_pairs(copies[:16], originals[:16],
                                                      images_dir / f"{role}_extraction.png").name
        return section, images

    def checks(self, results: dict, thresholds: Thresholds) -> list[Check]:
        references, sections = results["membership"]["references"], results.get(self.name)
        if not sections or not references:
            return []
        extracted = sections["unlearned"]["num_forget_extracted"]
        limit = max(sections[r]["num_forget_extracted"] for r in references) + thresholds.extraction_margin
        return [Check("extraction", "forget images regenerated (extracted) no more often than by any reference",
                      PASS if extracted <= limit else FAIL, float(extracted), None,
                      f"<= the references' most + {thresholds.extraction_margin}",
                      f"{extracted} forget images extracted vs limit {limit} (a count: no interval)")]
