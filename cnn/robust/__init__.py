"""Adversarial robustness: FGSM, PGD (L-inf, L2, restarts, targeted), FGSM with a random start for
adversarial training (``parse_attack``: the attack of a config's ``training.adversarial``), and robust
accuracy over a data iterator. Images are floats in [0, 1];
``logits_fn`` maps them to logits with any normalisation inside."""

from cnn.robust.attacks import (NORMS, PGDState, cross_entropy, example_keys, fgsm, fgsm_rs, pgd, pgd_finish, pgd_start,
                                 pgd_step, project)
from cnn.robust.evaluation import ATTACKS, madry_step_size, robust_accuracy
from cnn.robust.training import TrainingAttack
from cnn.robust.training import parse as parse_attack

__all__ = ["ATTACKS", "NORMS", "cross_entropy", "example_keys", "fgsm", "fgsm_rs", "madry_step_size", "pgd", "pgd_finish", "pgd_start", "pgd_step",
           "PGDState", "project",
           "robust_accuracy", "TrainingAttack", "parse_attack"]
