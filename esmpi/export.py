"""`esmpi export`: a trained policy as a plain `.npz` that numpy alone can run (the README's section
"`esmpi export`: the policy without esmpi" holds the runner; tests check it against esmpi's own
forward pass for MLP and CNN policies and every action mapping).

Keys of the file (all plain arrays, no pickles):

    kind                  'mlp'; 'linear' (one layer, no hidden: x @ W0 + b0); 'cnn':
                          convolutions before the dense layers; 'rnn': the first layer reads
                          [x, h] and its output is the next step's h (zero at an episode's
                          start); 'hebbian': see below; or a user's 'module:Class', whose file
                          holds only kind, theta (float32), env_id and generation
    W0, b0, W1, b1, ...   float32 layer weights (n_in, n_out) and biases (n_out,); a layer computes
                          x @ W + b (biases are zeros for a policy trained without them)
    n_layers              number of layers
    activation            'tanh' or 'relu', applied after every layer but the last (and after
                          every pooled convolution of a CNN)
    output                'argmax' (Discrete), or for Box actions 'clip', 'tanh' or 'sigmoid', one
                          name for every dimension or one per dimension joined by commas
                          ('tanh,sigmoid,sigmoid'): tanh maps x to low + (tanh(x) + 1) / 2 *
                          (high - low), sigmoid to low + (high - low) / (1 + exp(-x)); then clip
    action_low/high       Box bounds, flat (empty for argmax); action_shape the Box's own shape
    action_start          Discrete(n, start): the first action's value
    obs_encoding          'box' (flattened values), 'onehot' (Discrete observations) or 'pixels'
    env_id, generation    where the policy comes from

  hebbian (no W, b: the weights start random in each episode and change at every step):
    rule_eta0, rule_A0, rule_B0, rule_C0, rule_D0, rule_eta1, ...  float32 (n_in, n_out) per
                          layer: after each step,
                          W += eta * (A * pre * post + B * pre + C * post + D), pre (n_in, 1) the
                          layer's input, post (1, n_out) its output (after the activation; raw
                          for the last layer); then, with plastic_norm, W /= max |W|
    initial_weight, weights_stream  the weights of an episode reset with seed s are
                          default_rng(SeedSequence([s, weights_stream])).uniform(-initial_weight,
                          initial_weight, all weights) in float32, layer by layer row-major

  every kind but those on pixels:
    obs_mean, obs_std     normalisation: x = clip((obs - obs_mean) / obs_std, -obs_clip, obs_clip)
    obs_clip              see above

  cnn, and hebbian on pixels (policies/cnn.py; the observation is not normalised but scaled):
    obs_shape             (frames, height, width, colours) of one observation; the frames are
                          joined on the colour axis into one (height, width, frames * colours) image
    obs_scale             the image is multiplied by this (1/255: pixels in [0, 1])
    C0, c0, C1, c1, ...   float32 convolution weights (size, size, c_in, c_out) and biases (c_out,)
    conv_size, conv_stride  each convolution's square kernel size and stride (no padding)
    pool                  after each convolution (and its bias): a pool x pool max-pool, which
                          drops an odd last row or column, then the activation; the first dense
                          layer reads the last one flattened as (row, column, channel)
"""

from __future__ import annotations

import os

import numpy as np

from esmpi import checkpoint
from esmpi.config import UsageError, from_toml
from esmpi.evaluate import trained_policy
from esmpi.policies import hebbian
from esmpi.policies.spec import CONV_LAYERS, HEBBIAN_TERM_NAMES, POOL, conv_views, layer_views


def exported_arrays(path: str, best: bool = False) -> dict[str, np.ndarray]:
    """The arrays of the export of the checkpoint at `path` (theta, or best/theta)."""
    state = checkpoint.load(path)
    config = from_toml(state.config_toml)
    spec = state.policy
    theta, obs_mean, obs_std = trained_policy(state, config, best)
    arrays = dict(
        kind=np.array(spec.kind),
        env_id=np.array(state.env_id),
        generation=np.array(state.best_generation if best else state.generation),
    )
    if spec.is_user_class:  # the class runs it: its parameters are all there is to export
        arrays.update(theta=np.array(theta, dtype=np.float32))
        return arrays
    arrays.update(
        n_layers=np.array(len(spec.layer_shapes)),
        activation=np.array(spec.activation),
        output=np.array(spec.output),
        action_low=np.array(spec.action_low, dtype=np.float64),
        action_high=np.array(spec.action_high, dtype=np.float64),
        action_shape=np.array(spec.action_shape, dtype=np.int64),
        action_start=np.array(spec.action_start),
        obs_encoding=np.array(spec.obs_encoding),
    )
    if spec.kind == "hebbian":
        arrays.update(_hebbian_rule(spec, theta))
        arrays.update(
            plastic_norm=np.array(spec.plastic_norm),
            initial_weight=np.array(hebbian.INITIAL_WEIGHT),
            weights_stream=np.array(hebbian.WEIGHTS_STREAM),
        )
    else:
        arrays.update(_float32_layers("W", "b", layer_views(spec, theta)))
    if spec.conv_shapes:  # a CNN, or a Hebbian policy on pixels
        arrays.update(_float32_layers("C", "c", conv_views(spec, theta)))
        arrays.update(
            conv_size=np.array([size for _, size, _ in CONV_LAYERS], dtype=np.int64),
            conv_stride=np.array([stride for _, _, stride in CONV_LAYERS], dtype=np.int64),
            pool=np.array(POOL),
            obs_shape=np.array(spec.obs_shape, dtype=np.int64),
            obs_scale=np.array(float(spec.obs_scale)),
        )
    else:
        arrays.update(
            obs_mean=np.asarray(obs_mean, dtype=np.float64),
            obs_std=np.asarray(obs_std, dtype=np.float64),
            obs_clip=np.array(float(config.obs_clip)),
        )
    return arrays


def _hebbian_rule(spec, theta: np.ndarray) -> dict[str, np.ndarray]:
    """rule_eta0, rule_A0, ..., rule_D0, rule_eta1, ...: each layer's rule, float32 (n_in,
    n_out), read after the convolutions on pixels."""
    arrays, position = {}, sum(weights.size for weights, _ in conv_views(spec, theta))
    for index, (n_in, n_out) in enumerate(spec.layer_shapes):
        for term in HEBBIAN_TERM_NAMES:
            arrays[f"rule_{term}{index}"] = np.array(
                theta[position : position + n_in * n_out].reshape(n_in, n_out), dtype=np.float32
            )
            position += n_in * n_out
    return arrays


def _float32_layers(weight_key: str, bias_key: str, views) -> dict[str, np.ndarray]:
    """(W, b) views as float32 arrays named W0, b0, W1, b1, ... (for weight_key 'W', bias_key
    'b'); zero biases for a policy without them, so that a runner needs no special case."""
    arrays = {}
    for index, (weights, bias) in enumerate(views):
        arrays[f"{weight_key}{index}"] = np.array(weights, dtype=np.float32)
        arrays[f"{bias_key}{index}"] = (
            np.array(bias, dtype=np.float32)
            if bias is not None
            else np.zeros(weights.shape[-1], dtype=np.float32)
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
    # numpy's stub lets **arrays fill savez's allow_pickle: bool; every key here names an array.
    np.savez(out, **arrays)  # type: ignore[arg-type]
    return arrays
