"""The optimizers of the gradient-following strategies, each a few lines behind one `step`.

- Adam (Kingma and Ba 2015), as in Salimans et al.'s starter code.
- SGD with momentum: v = momentum * v + g, change = lr * v (momentum 0: plain SGD).
- ClipUp (Toklu, Liskowski and Srivastava 2020, "ClipUp: A Simple and Powerful Optimizer for
  Distribution-based Policy Evolution"): v = momentum * v + lr * g / |g|, with |v| clipped to
  max_speed; change = v. The normalised gradient makes lr the length of a step in parameter space,
  whatever the scale of the fitness.

All work on float64 gradients and return the change to add to theta (gradient ascent).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from esmpi.strategies import portable
from esmpi.strategies.base import described

ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON = 0.9, 0.999, 1e-8
NAMES = ("adam", "sgd", "clipup")


@dataclass(frozen=True)
class OptimizerState:
    """The optimizer's memory between generations."""

    step: int = described("updates applied so far")
    first_moment: np.ndarray = described(
        "Adam's first moment; the velocity of SGD with momentum and of ClipUp", "parameter units"
    )
    second_moment: np.ndarray = described(
        "Adam's second moment (zeros for SGD and ClipUp)", "parameter units squared"
    )

    @classmethod
    def initial(cls, n_params: int) -> OptimizerState:
        return cls(step=0, first_moment=np.zeros(n_params), second_moment=np.zeros(n_params))


def step(
    name: str,
    state: OptimizerState,
    grad: np.ndarray,
    lr: float,
    momentum: float = 0.0,
    max_speed: float = 0.0,
) -> tuple[np.ndarray, OptimizerState]:
    """The change to add to theta for gradient `grad` (ascent), and the new optimizer state.
    max_speed 0 means twice lr (ClipUp's recommendation)."""
    if name == "adam":
        return adam(state, grad, lr)
    if name == "sgd":
        return sgd(state, grad, lr, momentum)
    return clipup(state, grad, lr, momentum, max_speed or 2 * lr)


def adam(state: OptimizerState, grad: np.ndarray, lr: float) -> tuple[np.ndarray, OptimizerState]:
    count = state.step + 1
    first = ADAM_BETA1 * state.first_moment + (1 - ADAM_BETA1) * grad
    second = ADAM_BETA2 * state.second_moment + (1 - ADAM_BETA2) * grad * grad
    rate = lr * np.sqrt(1 - ADAM_BETA2**count) / (1 - ADAM_BETA1**count)
    change = rate * first / (np.sqrt(second) + ADAM_EPSILON)
    return change, OptimizerState(step=count, first_moment=first, second_moment=second)


def sgd(
    state: OptimizerState, grad: np.ndarray, lr: float, momentum: float
) -> tuple[np.ndarray, OptimizerState]:
    velocity = momentum * state.first_moment + grad if momentum else grad
    new = OptimizerState(state.step + 1, velocity, state.second_moment)
    return lr * velocity, new


def clipup(
    state: OptimizerState, grad: np.ndarray, lr: float, momentum: float, max_speed: float
) -> tuple[np.ndarray, OptimizerState]:
    norm = portable.norm(grad)
    direction = grad / norm if norm > 0 else np.zeros_like(grad)
    velocity = momentum * state.first_moment + lr * direction
    speed = portable.norm(velocity)
    if speed > max_speed:
        velocity = velocity * (max_speed / speed)
    return velocity, OptimizerState(state.step + 1, velocity, state.second_moment)
