import numpy as np
import torch
from scipy import linalg

from diffusion.judge import load_or_train_judge
from diffusion.quality import entropy, evaluate_generation, frechet_distance, judged_correct

from .conftest import tiny_model


def test_frechet_distance_known_answers():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert abs(frechet_distance(a, a)) < 1e-8
    shifted = a + np.array([2.0, 0.0, 0.0])
    assert abs(frechet_distance(a, shifted) - 4.0) < 1e-6
    b = rng.normal(size=(4000, 3)) * 2.0
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b - 2 * linalg.sqrtm(cov_a @ cov_b).real)
    assert abs(frechet_distance(a, b) - expected) < 1e-6


def test_frechet_distance_with_singular_covariance():
    rng = np.random.default_rng(1)
    a = np.c_[rng.normal(size=(200, 2)), np.zeros(200)]  # a dead feature
    assert np.isfinite(frechet_distance(a, a + 0.5))


def test_entropy():
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    assert torch.allclose(entropy(p), torch.tensor([0.0, np.log(2)], dtype=torch.float32), atol=1e-6)


def test_judged_correct_mean_is_the_exact_share():
    labels = torch.zeros(50, dtype=torch.long)
    probabilities = torch.tensor([[0.1, 0.9]] * 45 + [[0.8, 0.2]] * 5)
    correct = judged_correct(probabilities, labels)
    assert correct.tolist() == [0.0] * 45 + [1.0] * 5
    assert correct.mean().item() == 5 / 50 <= 0.10  # a float32 mean gives 0.1000000015


def test_judge_is_accurate_and_cached(digits, judge, tmp_path):
    assert judge.test_accuracy >= 0.95
    test_ids = judge.record["test_ids"]
    probs = judge.probabilities(digits.images[test_ids])
    assert torch.allclose(probs.sum(1), torch.ones(len(test_ids)), atol=1e-5)
    assert judge.features(digits.images[:3]).shape == (3, 128)
    first = load_or_train_judge(digits, directory=tmp_path / "j")
    again = load_or_train_judge(digits, directory=tmp_path / "j")
    assert torch.equal(first.probabilities(digits.images[:20]), again.probabilities(digits.images[:20]))
    assert again.record["test_ids"] == first.record["test_ids"]


def test_evaluate_generation_splits_forgotten_and_retained(digits, judge):
    report = evaluate_generation(tiny_model(), judge, digits, forget_classes=(3,), per_class=4, steps=3)
    assert set(report["per_class_accuracy"]) == set(range(10))
    assert 0.0 <= report["forgotten_accuracy"] <= 1.0 and report["forgotten_entropy"] >= 0.0
    assert report["retained_fd"] > 0
    assert report == evaluate_generation(tiny_model(), judge, digits, forget_classes=(3,), per_class=4, steps=3)
