"""The reference model's split and named recipes (overrides of :class:`diffusion.training.TrainConfig`),
torch-free so that configs check them without importing torch.

An audit has power only where the original model leaks: a quarter of the images as members and 2000 steps make a
reference that the attacks see within the reference's 5-minute budget; "thorough" trains three times longer (its
references retrain with the same steps). Measurements: benchmarks/results/defaults.md ("Reference and audit").
"""

DEFAULT_MEMBER_FRACTION = 0.25
RECIPE_PRESETS: dict[str, dict] = {"default": {}, "thorough": {"steps": 6000}}

# The built-in text-to-image model (``erasediff train --kind text``): the same recipe, 1000 steps (why:
# benchmarks/results/defaults.md, "Reference and audit").
TEXT_RECIPE: dict = {"kind": "text", "steps": 1000}
