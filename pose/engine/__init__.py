"""Training engine: the shared loop (:mod:`pose.engine.trainer`) and optimizers / schedules (:mod:`pose.engine.optim`)."""
from pose.engine.optim import build_optimizer, build_scheduler, openpose_param_groups
from pose.engine.trainer import NonFiniteLossError, TrainConfig, Trainer, seed_everything

__all__ = ["Trainer", "TrainConfig", "NonFiniteLossError", "seed_everything", "build_optimizer",
           "build_scheduler", "openpose_param_groups"]
