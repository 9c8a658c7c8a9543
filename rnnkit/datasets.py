"""Synthetic sequence data you can regenerate from a seed.

:func:`ball` — the lectures' opening example, "given its past positions, where will the ball go
next?": balls thrown in a vertical plane under gravity with air drag, bouncing off the floor
``y = 0`` with energy loss, observed at a fixed rate with Gaussian noise.

Physics (per unit mass; x horizontal, y up, metres and seconds). Between bounces

    dv/dt = −g ŷ − c |v| v          (quadratic drag, c = ``drag`` in 1/m)
    dp/dt = v

integrated with ``substeps`` steps of h = dt / substeps per observation, split into two exact
pieces: the drag update v ← v / (1 + c |v| h) (implicit Euler of the drag term: it only ever
shrinks the speed, never reverses it), then the exact ballistic flight under gravity,
p ← p + v h − ½ g h² ŷ, v_y ← v_y − g h, which conserves E = ½|v|² + g y exactly. When the
flight would cross the floor, it stops at the exact contact time τ = (v_y + √(v_y² + 2 g y)) / g,
the ball bounces

    v_y ← −e · v_y,   v_x ← (1 − μ) · v_x      (restitution e ≤ 1, floor friction μ ≥ 0)

and the rest of the substep is flown from y = 0. A bounce slower than ``rest_speed`` leaves the
ball rolling (y = 0, v_y = 0), slowed by drag only. Hence the mechanical energy
E = ½|v|² + g y never increases: flight conserves it, drag and bounces remove some; with
``drag = 0``, ``restitution = 1`` and ``friction = 0`` it is conserved to rounding error.

Launches are drawn from the seed: height y₀ ~ U(0.5, 2) m, speed ~ U(3, 8) m/s, angle
~ U(20°, 70°), x₀ = 0. Observations add N(0, ``noise``²) to both coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["BallTrajectories", "ball"]


@dataclass
class BallTrajectories:
    """``n`` trajectories of ``steps`` observations each.

    ``observed (n, T, 2)`` noisy (x, y); ``position (n, T, 2)`` and ``velocity (n, T, 2)`` the true
    state at each observation time; ``bounced (n, T)`` whether the floor was hit during the
    interval that ends at step t (t ≥ 1); ``params`` the generator's arguments.
    """

    observed: np.ndarray
    position: np.ndarray
    velocity: np.ndarray
    bounced: np.ndarray
    dt: float
    gravity: float
    params: dict = field(default_factory=dict)

    columns = ("x", "y")

    def energy(self) -> np.ndarray:
        """Mechanical energy per unit mass, E = ½|v|² + g·y, shape ``(n, T)``."""
        return 0.5 * (self.velocity**2).sum(-1) + self.gravity * self.position[..., 1]

    def __len__(self) -> int:
        return self.observed.shape[0]


def ball(
    n: int = 256,
    steps: int = 100,
    dt: float = 0.05,
    gravity: float = 9.81,
    drag: float = 0.05,
    restitution: float = 0.75,
    friction: float = 0.1,
    noise: float = 0.02,
    substeps: int = 10,
    rest_speed: float = 0.5,
    seed: int = 0,
) -> BallTrajectories:
    """Simulate ``n`` thrown balls for ``steps`` observations ``dt`` seconds apart (see the
    module docstring for the physics). The same arguments always give the same arrays."""
    if n < 1 or steps < 1 or substeps < 1:
        raise ValueError(f"n, steps and substeps must be >= 1; got {n}, {steps}, {substeps}")
    if not 0.0 <= restitution <= 1.0:
        raise ValueError(f"restitution must lie in [0, 1] (no energy gain); got {restitution}")
    if not 0.0 <= friction <= 1.0:
        raise ValueError(f"friction must lie in [0, 1]; got {friction}")
    if drag < 0 or noise < 0 or gravity <= 0 or dt <= 0:
        raise ValueError("drag and noise must be >= 0, gravity and dt > 0")
    rng = np.random.default_rng(seed)
    speed = rng.uniform(3.0, 8.0, n)
    angle = np.deg2rad(rng.uniform(20.0, 70.0, n))
    x = np.zeros(n)
    y = rng.uniform(0.5, 2.0, n)
    vx, vy = speed * np.cos(angle), speed * np.sin(angle)
    rolling = np.zeros(n, dtype=bool)

    position = np.empty((n, steps, 2))
    velocity = np.empty((n, steps, 2))
    bounced = np.zeros((n, steps), dtype=bool)
    h = dt / substeps
    g = gravity
    for t in range(steps):
        position[:, t, 0], position[:, t, 1] = x, y
        velocity[:, t, 0], velocity[:, t, 1] = vx, vy
        if t == steps - 1:
            break
        for _ in range(substeps):
            shrink = 1.0 / (1.0 + drag * np.hypot(vx, vy) * h)  # drag: speed only goes down
            vx, vy = vx * shrink, vy * shrink
            left = np.full(n, h)  # flight time still to cover in this substep
            for _ in range(16):  # a substep holds at most a few bounces
                roll = rolling & (left > 0)
                x[roll] += vx[roll] * left[roll]
                left[roll] = 0.0
                fly = (left > 0) & ~rolling
                if not fly.any():
                    break
                contact = (vy + np.sqrt(vy**2 + 2 * g * np.maximum(y, 0.0))) / g  # time to floor
                hit = fly & (contact < left)
                free = fly & ~hit
                tau = left[free]
                x[free] += vx[free] * tau
                y[free] = np.maximum(y[free] + vy[free] * tau - 0.5 * g * tau**2, 0.0)
                vy[free] -= g * tau
                left[free] = 0.0
                tau = contact[hit]
                x[hit] += vx[hit] * tau
                y[hit] = 0.0
                vy[hit] = -restitution * (vy[hit] - g * tau)  # reflect the contact velocity
                vx[hit] *= 1.0 - friction
                left[hit] -= tau
                bounced[hit, t + 1] = True
                stop = hit & (vy < rest_speed)
                rolling |= stop
                vy[stop] = 0.0
            else:  # pathological: ran out of bounce iterations; the ball comes to rest
                rolling |= left > 0
                vy[left > 0] = 0.0
    observed = position + rng.normal(0.0, noise, position.shape) if noise else position.copy()
    params = {
        "n": n,
        "steps": steps,
        "dt": dt,
        "gravity": gravity,
        "drag": drag,
        "restitution": restitution,
        "friction": friction,
        "noise": noise,
        "substeps": substeps,
        "rest_speed": rest_speed,
        "seed": seed,
    }
    return BallTrajectories(observed, position, velocity, bounced, dt, gravity, params)
