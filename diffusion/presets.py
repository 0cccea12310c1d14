"""The reference model's split and named recipes (overrides of :class:`diffusion.training.TrainConfig`),
torch-free so that configs check them without importing torch.

An audit has power only where the original model leaks. Members-vs-heldout leakage of the best attack on the 8x8
digits (benchmarks/results/reference_leakage.txt, 2 CPU cores): with half the images as members, 2000 steps
(3.2 min) give AUC 0.82, TPR@1%FPR 0.11, and 6000 steps (10 min) 0.996 / 0.90; with a quarter as members, 2000
steps (3.4 min) give 0.987 / 0.77 (each member is seen twice as often), within the reference's 5-minute budget.
Hence the default member fraction 0.25 with the 2000-step recipe; "thorough" trains three times longer for a
reference that remembers even more (its references retrain with the same steps).
"""

DEFAULT_MEMBER_FRACTION = 0.25
RECIPE_PRESETS: dict[str, dict] = {"default": {}, "thorough": {"steps": 6000}}

# The built-in text-to-image model (``erasediff train --kind text``): the same recipe, 1000 steps. Measured (2 CPU
# cores, judged on 50 samples per digit from held-out paraphrase prompts, guidance 2): 1000 steps train in 215 s,
# accuracy 99.2%, FD 5.80; 1500 steps take 330 s (over the 5-minute budget) for 100%, FD 7.53.
TEXT_RECIPE: dict = {"kind": "text", "steps": 1000}
