"""BIRDNN behaviour-imitation repair (retraining and fine-tuning) for domain-wise properties.

BIRDNN samples the property's input domain, splits the samples into positives (property holds) and
negatives, and either retrains the network so negatives imitate the nearest positive behaviour
(`retrain`) or scales the outputs of the neurons whose behaviour differs most between positives and
negatives by factors found with particle swarm optimisation (`finetune`). It only needs forward
passes, so any activation (ReLU, sigmoid, tanh) works. BIRDNN itself gives a sampling guarantee;
verirepair's loop re-verifies the exported file, and its counterexamples become new negatives.
"""

from .finetune import BirdnnFinetune, finetune_strategy
from .retrain import BirdnnRetrain, retrain_strategy
from .settings import BirdnnSettings

__all__ = ["BirdnnFinetune", "BirdnnRetrain", "BirdnnSettings", "finetune_strategy", "retrain_strategy"]
