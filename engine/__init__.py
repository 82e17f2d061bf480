"""Training engine: builds networks, optimizers and schedules from a run spec and calls the method's hooks."""
from .augment import AUGMENTS
from .optim import OPTIMIZERS, SCHEDULES, check_optimizer, check_schedule
from .trainer import evaluate, quartile_shares, train

__all__ = ["train", "evaluate", "quartile_shares", "AUGMENTS", "OPTIMIZERS", "SCHEDULES", "check_optimizer",
           "check_schedule"]
