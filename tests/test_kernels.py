"""Every numba kernel against its numpy twin in reference.py.

Tolerance: the kernel runs the layers in float32 with a rational tanh (within 4e-7 of np.tanh),
the reference in float64; outputs agree to 1e-5 relative to their scale."""

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import checked, child_environment
from esmpi import kernels, reference
from esmpi.policies import PolicySpec, actor_for, initial_theta, layer_views, mlp

TOLERANCE = 1e-5


def test_fast_tanh_close_to_numpy_everywhere():
    x = np.linspace(-20, 20, 400001, dtype=np.float32)
    approx = np.array([kernels.fast_tanh(v) for v in x[::7]])
    assert np.abs(approx - np.tanh(x[::7].astype(np.float64))).max() < 4e-7


def _spec(sizes, activation, bias, output):
    n_out = sizes[-1]
    bounds = (
        {}
        if output == "argmax"
        else dict(
            action_low=tuple(np.linspace(-2, -0.5, n_out)),
            action_high=tuple(np.linspace(0.5, 3, n_out)),
        )
    )
    return PolicySpec(
        sizes=tuple(sizes),
        activation=activation,
        bias=bias,
        output=output,
        obs_encoding="box",
        action_shape=() if output == "argmax" else (n_out,),
        **bounds,
    )


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=2, max_size=4),
    activation=st.sampled_from(["tanh", "relu"]),
    bias=st.booleans(),
    output=st.sampled_from(["argmax", "clip", "tanh"]),
    obs_dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 1000),
)
def test_policy_step_matches_numpy(sizes, activation, bias, output, obs_dtype, seed):
    spec = _spec(sizes, activation, bias, output)
    rng = np.random.default_rng(seed)
    theta = (rng.standard_normal(spec.n_params) * 0.5).astype(np.float32)
    actor = actor_for(spec, obs_clip=3.0)
    mean, std = rng.standard_normal(sizes[0]), rng.uniform(0.5, 2.0, sizes[0])
    actor.set_normalisation(mean, std)
    obs = (rng.standard_normal(sizes[0]) * 4).astype(obs_dtype)
    got = actor.act(obs, theta)
    low, high = np.array(spec.action_low), np.array(spec.action_high)
    layers = reference.float64_layers(spec, theta)
    want, centred = reference.policy_step(
        obs, mean, 1 / std, 3.0, layers, activation, output, low, high
    )
    if output == "argmax":
        # Outputs tied within float32 rounding are the one allowed disagreement.
        logits, _ = reference.policy_step(
            obs, mean, 1 / std, 3.0, layers, activation, "clip", -np.inf, np.inf
        )
        top = np.sort(logits)[-2:]
        assert got == want or top[1] - top[0] < TOLERANCE * (1 + abs(top[1]))
    else:
        assert np.allclose(got, want, rtol=TOLERANCE, atol=TOLERANCE * (1 + np.abs(want).max()))
    assert np.allclose(actor.obs_sums[0], centred) and np.allclose(actor.obs_sums[1], centred**2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("output", ["argmax", "clip"])
def test_policy_step_returns_not_finite_for_a_nan_or_inf_observation(bad, output):
    """Kernel and twin agree that an observation with one NaN/inf element has no action; the
    Actor raises NonFiniteObservation naming the element."""
    from esmpi.policies import NonFiniteObservation

    spec = _spec([5, 8, 3], "tanh", True, output)
    theta = initial_theta(spec, seed=0)
    actor = actor_for(spec)
    obs = np.linspace(-1.0, 1.0, 5)
    obs[3] = bad
    layout, scratch = actor.layout, actor.scratch
    assert mlp.mlp_step(obs, actor.obs_state, theta, layout, scratch) == kernels.NOT_FINITE
    layers = reference.float64_layers(spec, theta)
    low, high = np.full(3, -1.0), np.full(3, 1.0)
    got, _ = reference.policy_step(obs, 0.0, 1.0, 5.0, layers, "tanh", output, low, high)
    assert isinstance(got, int) and got == kernels.NOT_FINITE
    with pytest.raises(NonFiniteObservation, match=rf"\[3\] = {bad}"):
        actor.act(obs, theta)
    obs[3] = 0.5
    assert actor.act(obs, theta) is not None  # finite again: an action


def test_policy_step_with_default_architecture_and_init():
    spec = _spec([17, 128, 64, 6], "tanh", False, "clip")
    theta = initial_theta(spec, seed=0) * 30
    actor = actor_for(spec)
    obs = np.random.default_rng(0).standard_normal(17)
    layers = reference.float64_layers(spec, theta)
    low, high = np.array(spec.action_low), np.array(spec.action_high)
    want, _ = reference.policy_step(obs, 0.0, 1.0, 5.0, layers, "tanh", "clip", low, high)
    assert np.allclose(actor.act(obs, theta), want, atol=TOLERANCE)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 70), min_size=2, max_size=4),
    bias=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_dense_layers_add_products_in_row_order_bit_for_bit(sizes, bias, seed):
    """Every rank must get the same bits whatever its CPU's vector width: each output is the sum
    of its row products in row order, in float32, with no fused multiply-add. A float32 numpy
    loop over the rows is that sum written plainly (relu and clip are exact)."""
    unbounded = dict(action_low=(-1e30,) * sizes[-1], action_high=(1e30,) * sizes[-1])
    spec = replace(_spec(sizes, "relu", bias, "clip"), **unbounded)
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(spec.n_params).astype(np.float32)
    obs = rng.standard_normal(sizes[0]).astype(np.float32)
    x = np.clip(obs.astype(np.float64), -5.0, 5.0).astype(np.float32)
    for layer, (weights, layer_bias) in enumerate(layer_views(spec, theta)):
        y = layer_bias.copy() if layer_bias is not None else np.zeros(weights.shape[1], np.float32)
        for i in range(weights.shape[0]):
            y = y + x[i] * weights[i]
        x = np.maximum(y, np.float32(0)) if layer < len(sizes) - 2 else y
    assert np.array_equal(actor_for(spec).act(obs, theta), x)


@pytest.mark.parametrize("dim", [1, 7, 1000])
def test_weighted_noise_sum_matches_numpy(dim):
    rng = np.random.default_rng(dim)
    table = rng.standard_normal(5000).astype(np.float32)
    offsets = rng.integers(0, 5000 - dim, 9).astype(np.int64)
    weights = rng.standard_normal(9)
    out = np.empty(dim)
    kernels.weighted_noise_sum(table, offsets, weights, out)
    assert np.allclose(out, reference.weighted_noise_sum(table, offsets, weights, dim), rtol=1e-12)


def test_exp_is_the_c_librarys():
    """Bit for bit math.exp's (numpy's own float64 exp differs on CPUs with AVX-512)."""
    values = np.random.default_rng(4).standard_normal(10_001) * 30
    out = np.empty_like(values)
    kernels.exp_into(values, out)
    assert np.array_equal(out, reference.exp(values))


UPDATE_KERNELS = """
import sys, numpy as np
from esmpi import kernels
rng = np.random.default_rng(3)
table = rng.standard_normal(20_000).astype(np.float32)
offsets = rng.integers(0, 20_000 - 1_001, 9).astype(np.int64)
linear, square = rng.standard_normal(9), rng.standard_normal(9)
theta = rng.standard_normal(1_001).astype(np.float32)
sums = [np.empty(1_001) for _ in range(4)]
kernels.weighted_noise_sum(table, offsets, linear, sums[0])
kernels.weighted_noise_moments(table, offsets, linear, square, sums[1], sums[2])
kernels.exp_into(rng.standard_normal(1_001), sums[3])
mean_squares = np.empty((9, 2))
kernels.perturbed_mean_squares(theta, table, offsets, 0.02, mean_squares)
sys.stdout.buffer.write(b"".join(out.tobytes() for out in [*sums, mean_squares]))
"""


def test_the_update_kernels_give_the_same_bits_compiled_for_another_cpu():
    """Every rank compiles the kernels for its own CPU; those that the update runs (noise sums,
    exp, the weight penalty's mean squares) must not round differently where they are compiled
    for an older one (numba caches each CPU's build apart: Haswell's is compiled here)."""

    def run(variables):
        return checked(
            subprocess.run(
                [sys.executable, "-c", UPDATE_KERNELS],
                env={**child_environment(), **variables},
                capture_output=True,
            )
        ).stdout

    native, haswell = run({}), run({"NUMBA_CPU_NAME": "haswell"})
    assert len(native) == 8 * (4 * 1_001 + 18) and native == haswell


@settings(max_examples=300, deadline=None)
@given(seed=st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 2**31 - 1, 2**32 - 1])))
def test_seed_sequence_words_and_pcg64_state_are_numpys(seed):
    """Exact: envs.reset puts this state into an environment's generator instead of the one
    env.reset(seed=seed) would build."""
    from esmpi.envs import pcg64_state

    assert np.array_equal(kernels.seed_sequence_words(seed), reference.seed_sequence_words(seed))
    assert pcg64_state(seed) == np.random.PCG64(seed).state
