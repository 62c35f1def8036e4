"""`esmpi export`: a trained policy as a plain `.npz` that numpy alone can run (README, "Exporting a
policy", holds the 20-line runner; tests check it against esmpi's own forward pass).

Keys of the file (all plain arrays, no pickles):

    W0, b0, W1, b1, ...   float32 layer weights (n_in, n_out) and biases (n_out,); a layer computes
                          x @ W + b (biases are zeros for a policy trained without them)
    n_layers              number of layers
    activation            'tanh' or 'relu', applied after every layer but the last
    output                'argmax' (Discrete), 'clip' or 'tanh' (Box) action mapping
    action_low/high       Box bounds, flat (empty for argmax); action_shape the Box's own shape
    action_start          Discrete(n, start): the first action's value
    obs_encoding          'box' (flattened values) or 'onehot' (Discrete observations)
    obs_mean, obs_std     normalisation: x = clip((obs - obs_mean) / obs_std, -obs_clip, obs_clip)
    obs_clip              see above
    env_id, generation    where the policy comes from
"""

from __future__ import annotations

import os

import numpy as np

from esmpi import checkpoint
from esmpi.config import UsageError, from_toml
from esmpi.evaluate import trained_policy
from esmpi.policy import layer_views


def exported_arrays(path: str, best: bool = False) -> dict[str, np.ndarray]:
    """The arrays of the export of the checkpoint at `path` (theta, or best/theta)."""
    state = checkpoint.load(path)
    config = from_toml(state.config_toml)
    spec = state.policy
    if spec.kind != "mlp" or spec.output not in ("argmax", "clip", "tanh"):
        raise UsageError(
            f"{path} holds a {spec.kind.upper()} policy with {spec.output!r} actions, which the "
            "export format (MLP layers with one argmax, clip or tanh output) cannot describe; "
            "run it with `esmpi eval` instead."
        )
    theta, obs_mean, obs_std = trained_policy(state, config, best)
    arrays = {}
    for layer, (weights, bias) in enumerate(layer_views(spec, theta)):
        arrays[f"W{layer}"] = np.array(weights, dtype=np.float32)
        arrays[f"b{layer}"] = (
            np.array(bias, dtype=np.float32)
            if bias is not None
            else np.zeros(weights.shape[1], dtype=np.float32)
        )
    arrays.update(
        n_layers=np.array(len(spec.layer_shapes)),
        activation=np.array(spec.activation),
        output=np.array(spec.output),
        action_low=np.array(spec.action_low, dtype=np.float64),
        action_high=np.array(spec.action_high, dtype=np.float64),
        action_shape=np.array(spec.action_shape, dtype=np.int64),
        action_start=np.array(spec.action_start),
        obs_encoding=np.array(spec.obs_encoding),
        obs_mean=np.asarray(obs_mean, dtype=np.float64),
        obs_std=np.asarray(obs_std, dtype=np.float64),
        obs_clip=np.array(float(config.obs_clip)),
        env_id=np.array(state.env_id),
        generation=np.array(state.best_generation if best else state.generation),
    )
    return arrays


def export(path: str, out: str, best: bool = False) -> dict[str, np.ndarray]:
    """Write the export of the checkpoint at `path` to `out` (.npz); return its arrays."""
    if not out.endswith(".npz"):
        raise UsageError(f"{out}: the exported policy file must end in .npz.")
    arrays = exported_arrays(path, best)
    folder = os.path.dirname(out)
    if folder and not os.path.isdir(folder):
        raise UsageError(f"Cannot write {out}: the folder {folder} does not exist.")
    np.savez(out, **arrays)
    return arrays
