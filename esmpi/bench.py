"""`esmpi bench`: where training time goes, measured against what the simulator allows.

For each environment, in one mpiexec job on this machine:
  limit  a loop of env.step with a fixed action and no policy at all (one per core),
  bare   the same loop with esmpi's policy and a fixed parameter vector: the best any trainer
         built on Gymnasium's env.step with this policy could do per core,
  physics  for the MuJoCo environments esmpi steps natively (esmpi.native): the bare loop's
         episodes replayed with nothing but the reset, the policy, the action written into
         MjData.ctrl and mujoco.mj_step (and mj_rnePostConstraint where the reward reads contact
         forces): what the simulator allows with this policy,
  train  esmpi's training as `esmpi train` runs it (train.prepare, then Trainer.generation, the
         loop's body; natively stepped where it can be), in blocks of the generations that take
         about --train-seconds, each block between two measurements of the loops: env-steps/s
         per rank,
and efficiency = train / bare, limit_ratio = train / limit, physics_ratio = train / physics.
This VM's cores change speed by 10-40% for seconds at a time, so the loops and the training
they are compared with run in the same processes, a second or two apart, and each environment
gets --repeats such rounds (fewer, but at least MIN_ROUNDS, when one generation outlasts a
block). Also: the policy forward per step (numba against the numpy reference), the split of a
generation (rollouts, load-imbalance idle, update, checkpoint, everything else), start-up time,
strong scaling from 1 to 2 ranks (alternating blocks, also in one job), noise-table memory per
rank, and a model of generation time for 1 to 1024 ranks built from these parts (from a real
`esmpi train` run at a large population).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from esmpi import checkpoint, envs, native, parallel, reference
from esmpi.config import Config
from esmpi.policies import (
    PolicySpec,
    actor_for,
    cache_aligned_zeros,
    initial_theta,
    spec_for_spaces,
)

DEFAULT_ENVS = ("CartPole-v1", "HalfCheetah-v5", "Hopper-v5", "AntBulletEnv-v0", "CarRacing-v3")
FORWARD_SHAPES = ((17, 128, 64, 6), (348, 256, 256, 17))
# The CNN policy of the CarRacing-v3 preset: one 96x96 grayscale frame, 3 actions.
CNN_FORWARD_ENV = "CarRacing-v3"
# The built-in vector policies whose steps are timed against one env.step of POLICY_FAMILY_ENV.
POLICY_FAMILIES = ("linear", "mlp", "rnn", "hebbian")
POLICY_FAMILY_ENV = "HalfCheetah-v5"
# Seconds of the bare loop recorded for the physics loop to replay.
RECORDED_SECONDS = 1.0
# Rounds of loops and training an environment gets at least, however long its generations.
MIN_ROUNDS = 3
SCALING_RANKS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def forward_microseconds(sizes: tuple[int, ...], calls: int = 20000) -> dict:
    """Per-call time of the policy step on 1000 different observations: numba and numpy."""
    n_out = sizes[-1]
    spec = PolicySpec(
        sizes=sizes,
        activation="tanh",
        bias=False,
        output="clip",
        obs_encoding="box",
        action_low=(-1.0,) * n_out,
        action_high=(1.0,) * n_out,
        action_shape=(n_out,),
    )
    theta = cache_aligned_zeros(spec.n_params)  # as training's buffer of each member's parameters
    theta[:] = initial_theta(spec, seed=0)
    observations = list(np.random.default_rng(0).standard_normal((1000, sizes[0])))
    actor = actor_for(spec)
    low, high = -np.ones(n_out), np.ones(n_out)
    layers = reference.float64_layers(spec, theta)  # prepared once, as a numpy policy would be

    def numba_forward(obs):
        return actor.act(obs, theta)

    def numpy_forward(obs):
        return reference.policy_step(obs, 0.0, 1.0, 5.0, layers, "tanh", "clip", low, high)

    timings = {
        "numba_us": best_microseconds(numba_forward, observations, calls),
        "numpy_us": best_microseconds(numpy_forward, observations, calls),
    }
    return {"shape": "->".join(map(str, sizes)), **timings}


def best_microseconds(forward, inputs: list, calls: int) -> float:
    """Fastest of seven timings of `calls` calls of forward on inputs in turn, per call (us), less
    what the timing loop and the call of `forward` itself cost (timed with an empty function), so
    that what remains is what a rollout pays per step."""
    return _fastest_call(forward, inputs, calls) - _fastest_call(_nothing, inputs, calls)


def _nothing(obs) -> None:
    return None


def _fastest_call(forward, inputs: list, calls: int) -> float:
    forward(inputs[0])
    best = math.inf
    for _ in range(7):  # the fastest: this VM's neighbours slow some windows down by 50%
        started = time.perf_counter()
        for index in range(calls):
            forward(inputs[index % len(inputs)])
        best = min(best, (time.perf_counter() - started) / calls * 1e6)
    return best


def cnn_forward_microseconds(env_id: str = CNN_FORWARD_ENV, calls: int = 200) -> dict:
    """Per-call time of the CNN policy step of env_id's preset on 100 different frames: numba
    and the numpy reference."""
    from esmpi import presets

    config, _ = presets.resolve({"env": env_id})
    env, stepped, _ = envs.make_for_rollouts(config, quiet=True)
    spec = spec_for_spaces(stepped.observation_space, stepped.action_space, config)
    env.close()
    theta = initial_theta(spec, seed=0)
    rng = np.random.default_rng(0)
    frames = list(rng.integers(0, 256, (100, *spec.obs_shape), dtype=np.uint8))
    actor = actor_for(spec)
    timings = {
        "numba_us": best_microseconds(lambda obs: actor.act(obs, theta), frames, calls),
        "numpy_us": best_microseconds(
            lambda obs: reference.cnn_step(obs, spec, theta), frames, calls
        ),
    }
    shape = "x".join(map(str, spec.obs_shape))
    return {"shape": f"cnn {shape}->{'->'.join(map(str, spec.sizes))}", "env": env_id, **timings}


def policy_family_steps(env_id: str = POLICY_FAMILY_ENV, calls: int = 2000) -> list[dict]:
    """Each built-in vector policy's step (its forward and, for the Hebbian policy, the update of
    every weight) on observations of env_id, with the default --hidden, against one env.step of
    env_id (a fixed action, timed the same way): the share of a step each policy adds."""
    env = envs.make_env(env_id, quiet=True)
    fixed_action = env.action_space.sample()
    env.reset(seed=0)

    def env_step(_):
        if env.step(fixed_action)[2]:
            env.reset()

    step_us = best_microseconds(env_step, [None], calls)
    rows = [_policy_step_row(env, kind, step_us, calls) for kind in POLICY_FAMILIES]
    env.close()
    return rows


def _policy_step_row(env, kind: str, env_step_us: float, calls: int) -> dict:
    config = Config(env=env.spec.id, policy=kind)
    spec = spec_for_spaces(env.observation_space, env.action_space, config)
    actor = actor_for(spec, config.obs_clip)
    theta = cache_aligned_zeros(spec.n_params)
    theta[:] = initial_theta(spec, seed=0)
    actor.reset(0)

    def act(obs):
        return actor.act(obs, theta)

    policy_us = best_microseconds(act, visited_observations(env, act, 200), calls)
    return {
        "policy": kind,
        "shape": "->".join(map(str, spec.sizes)),
        "params": spec.n_params,
        "step_us": policy_us,
        "env_step_us": env_step_us,
        "share": policy_us / (policy_us + env_step_us),
    }


class BareLoops:
    """Single-core loops of Gymnasium's env.step on one environment of its own: without a policy
    (limit) and with esmpi's policy and a fixed parameter vector (bare); and for the natively
    stepped MuJoCo environments the bare loop's episodes replayed on the physics alone (physics).
    Episodes are the ones training runs:
    the environment's preset as `esmpi train` resolves it, its zero-action burn-in and its ends
    (the environment's, `--ignore-terminated`, `--early-stop` on the reward, or `cap` steps), so
    that the loops simulate the same kind of states training does. The loop is written out here,
    not taken from rollout.py, so that a slower rollout shows up in `efficiency`; it mirrors
    rollout._ruled_episode's rules (change both together)."""

    def __init__(self, env_id: str, cap: int):
        from esmpi import presets
        from esmpi.rollout import EpisodeRules, progress_terms, zero_action

        config, _ = presets.resolve({"env": env_id, "native": False})
        self.made, self.env, _ = envs.make_for_rollouts(config, quiet=True)
        spec = spec_for_spaces(self.env.observation_space, self.env.action_space, config)
        self.actor, self.theta = actor_for(spec, config.obs_clip), initial_theta(spec, seed=0)
        self.rules, self.cap = EpisodeRules.from_config(config), cap
        self.fixed_action = self.env.action_space.sample()
        self.idle = zero_action(self.env.action_space)
        self.terms = progress_terms(self.env) if self.rules.fitness == "progress" else None
        envs.first_reset(self.made, 0)
        self.recorded: list[tuple[int, list]] = []  # (reset seed, observations) per episode
        if native.why_not_native(self.env, config.env_kwargs) is None:
            self._loop(self._act, RECORDED_SECONDS, self.recorded)
            self.contact_forces = native.step_class(self.env).needs_contact_forces

    def rates(self, seconds: float) -> dict:
        """env-steps/s of the limit, the bare and (NaN where the environment has no native step)
        the physics loop, each run for about `seconds`, and the bare loop's mean episode
        length."""
        limit, _ = self._loop(lambda obs: self.fixed_action, seconds)
        bare, episode_steps = self._loop(self._act, seconds)
        physics = self._physics_loop(seconds) if self.recorded else math.nan
        return {"limit": limit, "bare": bare, "physics": physics, "episode_steps": episode_steps}

    def _act(self, obs):
        return self.actor.act(obs, self.theta)

    def _loop(self, policy, seconds: float, recorded: list | None = None) -> tuple[float, float]:
        """(steps/s, steps per episode) of `policy` on env.step for about `seconds`; each
        episode's reset seed and observations appended to `recorded` when given."""
        from esmpi.rollout import NO_RULES, PROGRESS_TERM

        env, rules, cap = self.env, self.rules, self.cap
        ruled, patience = rules != NO_RULES, rules.early_stop or cap + 1
        steps, episodes = 0, 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            if recorded is None:
                obs, _ = env.reset()
            else:
                seen: list = []
                recorded.append((len(recorded), seen))
                obs, _ = envs.reset(env, len(recorded) - 1)
            episodes += 1
            negative_run = 0
            for step in range(1, cap + 1):
                if recorded is not None:
                    seen.append(obs)
                action = self.idle if step <= rules.burn_in else policy(obs)
                obs, reward, terminated, truncated, _ = env.step(action)
                if (terminated and not rules.ignore_terminated) or truncated:
                    break
                if ruled and step > rules.burn_in:
                    score = reward if self.terms is None else self.terms.rewards[PROGRESS_TERM]
                    negative_run = negative_run + 1 if score < 0 else 0
                    if negative_run > patience and step > rules.early_stop_after:
                        break
            steps += step
        return steps / (time.perf_counter() - started), steps / episodes

    def _physics_loop(self, seconds: float) -> float:
        """env-steps/s of the recorded episodes replayed for about `seconds`: each the
        environment's reset with its seed, then per step the policy on the recorded observation
        (the action it took then), the action into ctrl and the physics. MuJoCo is
        deterministic, so the states and contacts are the bare loop's."""
        import mujoco

        base = self.env.unwrapped
        model, data, ctrl, frames = base.model, base.data, base.data.ctrl, base.frame_skip
        burn_in, mj_step, forces = self.rules.burn_in, mujoco.mj_step, mujoco.mj_rnePostConstraint
        steps = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            for seed, seen in self.recorded:
                envs.reset(self.env, seed)
                for step, obs in enumerate(seen, 1):
                    ctrl[:] = self.idle if step <= burn_in else self._act(obs)
                    mj_step(model, data, frames)
                    if self.contact_forces:
                        forces(model, data)
                steps += len(seen)
                if time.perf_counter() > deadline:
                    break
        return steps / (time.perf_counter() - started)

    def policy_share(self, bare_steps_per_s: float) -> float:
        """The policy's share of a bare step: its forward pass timed apart, on observations of
        this environment, times the bare loop's steps per second."""
        seen = visited_observations(self.env, self._act, 200)
        return best_microseconds(self._act, seen, 1000) * 1e-6 * bare_steps_per_s


def visited_observations(env, policy, count: int) -> list:
    """`count` observations (copies) from episodes of `policy`."""
    seen: list = []
    obs, _ = env.reset()
    while len(seen) < count:
        seen.append(np.array(obs))
        obs, _, terminated, truncated, _ = env.step(policy(obs))
        if terminated or truncated:
            obs, _ = env.reset()
    return seen


def seconds_since_process_start() -> float:
    """Wall time since this process started (Linux /proc; 10 ms resolution)."""
    with open("/proc/self/stat") as handle:
        after_name = handle.read().rsplit(")", 1)[1].split()
    with open("/proc/uptime") as handle:
        uptime = float(handle.read().split()[0])
    return uptime - int(after_name[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime


def rates_on_every_rank(comm, loops: BareLoops, seconds: float) -> dict:
    """BareLoops.rates on all ranks at once (one loop per core, as training's ranks run), the
    mean over ranks."""
    comm.Barrier()
    rows = comm.allgather(loops.rates(seconds))
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def rates_alone(comm, loops: BareLoops, seconds: float) -> dict:
    """BareLoops.rates on rank 0 while the other ranks sleep: one busy core."""
    comm.Barrier()
    rates = loops.rates(seconds) if comm.Get_rank() == 0 else {}
    parallel.rest_until_all_arrive(comm)
    return comm.bcast(rates, root=0)


def probe_config(
    env_id: str, popsize: int, cap: int, folder: str, name: str, options: dict | None = None
) -> Config:
    """The config `esmpi train --env env_id --popsize popsize --max-steps cap --episode-cap 0`
    (and `options`, more of the command's values by name) resolves to, run in `folder`/`name`
    until the bench stops calling generations. Whole episodes, as the bare loops play them: an
    adaptive cap (HalfCheetah-v5's preset) would make training's episodes shorter than theirs,
    and the comparison one of resets."""
    from esmpi import presets

    values = {"env": env_id, "popsize": popsize, "max_steps": cap, "episode_cap": 0}
    values.update(options or {})
    values["generations"] = 1 << 40
    config, _ = presets.resolve({**values, "folder": folder, "run_name": name})
    return config


def generations_block(trainer, min_steps: int, min_generations: int = 1) -> dict:
    """Run generations of `trainer` (a train.Trainer) until they have taken `min_steps`
    env-steps and are `min_generations` or more (every rank counts the same steps, so all run
    the same generations), and summarise them."""
    history = trainer.run.history
    first = len(history)
    previous = history[-1] if history else None
    start = previous["timesteps"] if previous is not None else 0
    trainer.generation()
    while len(history) - first < min_generations or history[-1]["timesteps"] - start < min_steps:
        trainer.generation()
    return summary_of_rows(history[first:], previous)


def summary_of_rows(rows, previous) -> dict:
    """Generations, steps and seconds of consecutive history rows of a run (rank 0's timings)
    since the `previous` row (None: since the start), and how those seconds were spent."""
    rows = np.array(rows, dtype=checkpoint.HISTORY_DTYPE)
    before = (0, 0.0) if previous is None else (previous["timesteps"], previous["wall_s"])
    return {
        "generations": len(rows),
        "steps": int(rows["timesteps"][-1] - before[0]),
        "seconds": float(rows["wall_s"][-1] - before[1]),
        **{
            key: float(rows[f"{key}_s"].sum())
            for key in ("rollout", "idle", "update", "checkpoint")
        },
    }


def environment_probe(settings: dict) -> None:
    """Run under mpiexec (see environment_rounds): every rank makes its BareLoops and prepares
    `esmpi train` (train.prepare, as the command does), then alternates the loops with blocks of
    generations of that training; rank 0 prints the measurements as one JSON line."""
    from esmpi import train

    env_id, cap, loop_s = settings["env"], settings["max_steps"], settings["loop_seconds"]
    comm = parallel.world()
    ranks = comm.Get_size()
    loops = BareLoops(env_id, cap)
    config = probe_config(env_id, settings["popsize"], cap, settings["folder"], settings["name"])
    trainer = train.prepare(config, comm)
    startup_s = comm.allreduce(seconds_since_process_start(), op=max)
    trainer.generation()  # warm-up: first calls of every kernel, first pages of the table
    loops.rates(min(loop_s, 0.5))
    solo = rates_alone(comm, loops, loop_s)
    measured = [rates_on_every_rank(comm, loops, loop_s)]
    # Blocks of about train_seconds at the loop's rate; episodes in training differ in length
    # from the loop's (CartPole's grow, Hopper's perturbed walkers fall), so count steps.
    min_steps = round(settings["train_seconds"] * measured[0]["bare"] * ranks)
    budget_s = settings["repeats"] * (settings["train_seconds"] + 2 * loop_s) * 1.5
    blocks, started = [], time.perf_counter()
    for index in range(settings["repeats"]):
        comm.Barrier()
        blocks.append(generations_block(trainer, min_steps))
        measured.append(rates_on_every_rank(comm, loops, loop_s))
        # Environments whose one generation outlasts the block (PyBullet's Ant, CarRacing) stop
        # after MIN_ROUNDS once the rounds have taken 1.5 times what they would have.
        spent = comm.bcast(time.perf_counter() - started)
        if index + 1 >= MIN_ROUNDS and spent > budget_s:
            break
    if comm.Get_rank() == 0:
        share = loops.policy_share(float(np.mean([m["bare"] for m in measured])))
        result = {"startup_s": startup_s, "solo": solo, "loops": measured, "blocks": blocks}
        print(json.dumps({**result, "policy_share": share}))


def scaling_probe(settings: dict) -> None:
    """Run under mpiexec -n 2 (see strong_scaling): blocks of generations on both ranks
    alternating with blocks of a run of the same population on rank 0 alone while rank 1 sleeps;
    rank 0 prints the blocks as one JSON line."""
    from esmpi import train

    env_id, popsize, cap = settings["env"], settings["popsize"], settings["max_steps"]
    comm = parallel.world()
    both = train.prepare(probe_config(env_id, popsize, cap, settings["folder"], "both"), comm)
    alone = None
    if comm.Get_rank() == 0:
        config = probe_config(env_id, popsize, cap, settings["folder"], "alone")
        alone = train.prepare(config, parallel.self_comm())
    pairs = []
    for index in range(settings["repeats"] + 1):  # the first pair warms up
        comm.Barrier()
        two = generations_block(both, settings["min_steps"])
        one = generations_block(alone, settings["min_steps"]) if alone is not None else None
        parallel.rest_until_all_arrive(comm)
        if index:
            pairs.append({"two_ranks": two, "one_rank": one})
    if comm.Get_rank() == 0:
        print(json.dumps(pairs))


def run_probe(probe: str, ranks: int, settings: dict):
    """Run bench.`probe`(settings) on `ranks` ranks under mpiexec; what rank 0 printed last."""
    code = f"import json, sys; from esmpi import bench; bench.{probe}(json.loads(sys.argv[1]))"
    command = parallel.mpiexec_python(ranks, ["-c", code, json.dumps(settings)])
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"bench {probe} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def strategies_probe(settings: dict) -> None:
    """Run under mpiexec (see strategy_updates): each strategy trains HalfCheetah-v5 in turn, a
    warm-up generation (first calls of its kernels) then a block of two, after the latency of
    the per-generation collectives. Rank 0 prints the blocks and the latency as one JSON line.
    Each training is closed before the next starts, so one noise table at a time is held."""
    from esmpi import strategies, train

    comm = parallel.world()
    blocks = {}
    collectives_us = allreduce_microseconds(comm)
    for name in strategies.REGISTRY:
        # All with the default MLP: ARS's default linear policy would hide the cost of a large
        # parameter vector; the novelty strategies measure the position BC.
        options = {"strategy": name, "policy": "mlp"}
        if strategies.selector(name):
            options["behaviour"] = "position"
        config = probe_config(
            "HalfCheetah-v5",
            settings["popsize"],
            settings["max_steps"],
            settings["folder"],
            name,
            options,
        )
        trainer = train.prepare(config, comm)
        trainer.generation()
        blocks[name] = generations_block(trainer, 0, 2)
        trainer.close()
    if comm.Get_rank() == 0:
        print(json.dumps({"blocks": blocks, "allreduce_us": collectives_us}))


def strategy_updates(ranks: int, popsize: int, folder: str, cap: int) -> dict:
    """Each strategy's update (its `tell`, and the observation statistics) as a share of a
    HalfCheetah-v5 generation at `popsize` on `ranks` ranks, from one mpiexec job
    (strategies_probe): the rows, the figures of OpenAI-ES's block, and the collectives'
    latency in seconds."""
    settings = {"popsize": popsize, "max_steps": cap, "folder": folder}
    probe = run_probe("strategies_probe", ranks, settings)
    figures = {
        name: training_figures(block, ranks, popsize, startup_s=math.nan)
        for name, block in probe["blocks"].items()
    }
    rows = [
        {
            "strategy": name,
            "update_s": row["update_s"],
            "generation_s": row["generation_s"],
            "update_share": row["split"]["update"],
        }
        for name, row in figures.items()
    ]
    return {
        "rows": rows,
        "openai_es": figures["openai-es"],
        "collective_s": probe["allreduce_us"] * 1e-6,
    }


def memory_probe(settings: dict) -> None:
    """Run under mpiexec: build the node-shared noise table and print each rank's memory."""
    comm = parallel.world()
    table = parallel.shared_noise_table(comm, Config().noise_table_size, 0).array
    table[:: 1 << 12].sum()  # touch it
    with open("/proc/self/smaps_rollup") as handle:
        fields = dict(line.split(":", 1) for line in handle if ":" in line)
    pss = int(fields["Pss"].split()[0]) / 1024
    rss = int(fields["Rss"].split()[0]) / 1024
    rows = comm.gather({"rank": comm.Get_rank(), "pss_mib": pss, "rss_mib": rss}, root=0)
    if comm.Get_rank() == 0:
        print(json.dumps({"table_mib": table.nbytes / 2**20, "ranks": rows}))


def memory_per_rank(ranks: int) -> dict:
    probe = run_probe("memory_probe", ranks, {})
    pss = [row["pss_mib"] for row in probe["ranks"]]
    return {"ranks": ranks, "table_mib": probe["table_mib"], "pss_mib_per_rank": pss}


def allreduce_microseconds(comm) -> float:
    """Latency of the per-generation collectives, for the scaling model: an in-place Allreduce
    of a generation's table at popsize 256 (129 task rows) on every rank of `comm`, in
    microseconds (rank 0's mean over 2000)."""
    rows = np.zeros((129, 40))
    for _ in range(100):
        parallel.sum_records(comm, rows)
    started = time.perf_counter()
    for _ in range(2000):
        parallel.sum_records(comm, rows)
    return (time.perf_counter() - started) / 2000 * 1e6


def scaling_model(episode_s: float, update_s: float, collective_s: float, popsize: int) -> list:
    """Predicted generation time on n ranks: each rank runs ceil(tasks / n) tasks (a task is an
    antithetic pair, two episodes; one more task evaluates theta), the update runs on every rank
    unchanged, the collectives grow with log2(n)."""
    tasks = popsize // 2 + 1
    rows = []
    for ranks in SCALING_RANKS:
        rollout = math.ceil(tasks / ranks) * 2 * episode_s
        collectives = collective_s * max(1.0, math.log2(ranks))
        generation = rollout + update_s + collectives
        rows.append(
            {
                "ranks": ranks,
                "generation_s": generation,
                "speedup": (tasks * 2 * episode_s + update_s + collective_s) / generation,
                "update_share": update_s / generation,
            }
        )
    return rows


def environment_rounds(
    env_id: str,
    ranks: int,
    popsize: int,
    train_seconds: float,
    loop_seconds: float,
    cap: int,
    folder: str,
    repeats: int,
) -> dict:
    """`repeats` rounds (fewer, down to MIN_ROUNDS, for long generations) of a block of training
    generations between two measurements of the loops on `ranks` cores, all in one mpiexec job
    (environment_probe): loops, generations, loops, generations, ..., loops. This VM's cores slow
    down by 10-40% for seconds at a time, so the loops and the training they are compared with
    must run close together: each block lasts about `train_seconds` and is compared with the
    loops just before and after it. The row reports the
    round of median efficiency and lists every round's."""
    say(
        f"{env_id}: up to {repeats} rounds of the loops on {ranks} cores at once and esmpi "
        f"training on {ranks} ranks, popsize {popsize}"
    )
    settings = {
        "env": env_id,
        "popsize": popsize,
        "max_steps": cap,
        "loop_seconds": loop_seconds,
        "train_seconds": train_seconds,
        "repeats": repeats,
        "folder": folder,
        "name": f"{env_id.replace('/', '-')}__{ranks}__{popsize}",
    }
    probe = run_probe("environment_probe", ranks, settings)
    loops, solo = probe["loops"], probe["solo"]
    rounds = []
    for index, block in enumerate(probe["blocks"]):
        together = {key: (loops[index][key] + loops[index + 1][key]) / 2 for key in loops[0]}
        per_rank = block["steps"] / block["seconds"] / ranks
        rounds.append(
            {
                "env": env_id,
                "limit_steps_per_s": together["limit"],
                "bare_steps_per_s": together["bare"],
                "bare_solo_steps_per_s": solo["bare"],
                "bare_episode_steps": together["episode_steps"],
                "policy_share": probe["policy_share"],
                "machine_scaling": together["bare"] / solo["bare"],
                "train_steps_per_s_per_rank": per_rank,
                "efficiency": per_rank / together["bare"],
                "limit_ratio": per_rank / together["limit"],
                "physics_steps_per_s": together["physics"],
                "physics_ratio": per_rank / together["physics"],
                "train": training_figures(block, ranks, popsize, probe["startup_s"]),
            }
        )
    median = sorted(rounds, key=lambda row: row["efficiency"])[(len(rounds) - 1) // 2]
    return {**median, "efficiency_of_each_round": [row["efficiency"] for row in rounds]}


def training_figures(block: dict, ranks: int, popsize: int, startup_s: float) -> dict:
    """A block of generations as the report shows it. Shares of its time: the busiest rank's
    episodes, the update, checkpoint writing on rank 0 (the other ranks go on with the next
    generation's episodes meanwhile, so it may overlap the rollouts), and the rest (noise
    offsets, collectives, bookkeeping); idle is the mean share of time a rank waited for the
    busiest one (it overlaps the busiest rank's rollouts)."""
    wall, generations = block["seconds"], block["generations"]
    rollout, update, writing = block["rollout"], block["update"], block["checkpoint"]
    return {
        "ranks": ranks,
        "popsize": popsize,
        "generations": generations,
        "steps": block["steps"],
        "steps_per_s_per_rank": block["steps"] / wall / ranks,
        "generation_s": wall / generations,
        "startup_s": startup_s,
        "split": {
            "rollouts": rollout / wall,
            "update": update / wall,
            "checkpoint": writing / wall,
            "other": max(wall - rollout - update - writing, 0.0) / wall,
        },
        "idle": block["idle"] / wall,
        "update_s": update / generations,
        "rollout_s": rollout / generations,
    }


def strong_scaling(
    env_id: str, popsize: int, min_steps: int, cap: int, folder: str, repeats: int
) -> dict:
    """Training on 1 and on 2 ranks, the same population, in alternating blocks of one mpiexec
    job (scaling_probe): efficiency = 2-rank steps/s / (2 x 1-rank steps/s), per pair of blocks
    and as the ratio of the medians."""
    settings = {"env": env_id, "popsize": popsize, "max_steps": cap, "folder": folder}
    settings.update(min_steps=min_steps, repeats=repeats)
    pairs = run_probe("scaling_probe", 2, settings)
    one = [pair["one_rank"]["steps"] / pair["one_rank"]["seconds"] for pair in pairs]
    two = [pair["two_ranks"]["steps"] / pair["two_ranks"]["seconds"] for pair in pairs]
    return {
        "env": env_id,
        "popsize": popsize,
        "generations": [pair["two_ranks"]["generations"] for pair in pairs],
        "steps_per_s_1_rank": float(np.median(one)),
        "steps_per_s_2_ranks": float(np.median(two)),
        "efficiency": float(np.median(two) / (2 * np.median(one))),
        "efficiency_of_each_pair": [b / (2 * a) for a, b in zip(one, two, strict=True)],
    }


def run(
    env_ids,
    ranks: int,
    popsize: int,
    train_seconds: float,
    loop_seconds: float,
    cap: int,
    big_popsize: int = 256,
    repeats: int = 7,
) -> dict:
    report: dict = {
        "machine": {"cpus": os.cpu_count()},
        "settings": {
            "ranks": ranks,
            "popsize": popsize,
            "train_seconds": train_seconds,
            "max_steps": cap,
            "loop_seconds": loop_seconds,
            "repeats": repeats,
        },
        "forward": [],
        "environments": [],
    }
    say("policy forward, numba against numpy")
    report["forward"] = [forward_microseconds(shape) for shape in FORWARD_SHAPES]
    report["forward_cnn"] = cnn_forward_microseconds()
    say(f"each policy family's step against an env.step of {POLICY_FAMILY_ENV}")
    report["policy_families"] = policy_family_steps()
    with tempfile.TemporaryDirectory() as folder:
        for env_id in env_ids:
            report["environments"].append(
                environment_rounds(
                    env_id, ranks, popsize, train_seconds, loop_seconds, cap, folder, repeats
                )
            )
        cheetah = next((e for e in report["environments"] if e["env"] == "HalfCheetah-v5"), None)
        if cheetah is not None:
            say(
                f"HalfCheetah-v5: strong scaling 1 -> 2 ranks ({repeats} pairs of alternating "
                f"blocks), and the update at popsize {big_popsize}"
            )
            report["strong_scaling"] = {
                **strong_scaling(
                    "HalfCheetah-v5",
                    popsize,
                    cheetah["train"]["steps"],
                    cap,
                    folder,
                    repeats,
                ),
                "machine_scaling": cheetah["machine_scaling"],
            }
            updates = strategy_updates(ranks, big_popsize, folder, cap)
            report["strategies"] = updates["rows"]
            big = updates["openai_es"]
            split = big["split"]
            report["overhead_big_population"] = {
                "env": "HalfCheetah-v5",
                "popsize": big_popsize,
                "ranks": ranks,
                "noise_update_collectives_share": split["update"] + split["other"],
                "split": split,
            }
            # The busiest rank ran about ceil(tasks / ranks) pairs of episodes per generation.
            episode_s = big["rollout_s"] / (2 * math.ceil((big_popsize // 2 + 1) / ranks))
            collective_s = updates["collective_s"]
            report["scaling_model"] = {
                "popsize": big_popsize,
                "episode_s": episode_s,
                "update_s": big["update_s"],
                "collective_s": collective_s,
                "rows": scaling_model(episode_s, big["update_s"], collective_s, big_popsize),
            }
    say("noise table memory per rank with 1, 2 and 4 ranks")
    report["memory"] = [memory_per_rank(n) for n in (1, 2, 4)]
    return report


def _or_dash(value: float, form: str) -> str:
    """`value` formatted, right-aligned to the width in `form`; '-' for NaN."""
    width = int(form.split(",")[0].split(".")[0])
    return f"{'-':>{width}}" if math.isnan(value) else f"{value:>{form}}"


def table(report: dict) -> str:
    """The report as text a person reads at a glance."""
    lines = ["policy forward per step (1000 varying observations)"]
    for row in report["forward"]:
        lines.append(
            f"  {row['shape']:<18} numba {row['numba_us']:6.2f} us   "
            f"numpy {row['numpy_us']:6.2f} us"
        )
    if "forward_cnn" in report:
        row = report["forward_cnn"]
        lines.append(
            f"  {row['shape']} ({row['env']} preset)  numba {row['numba_us']:,.1f} us   "
            f"numpy {row['numpy_us']:,.1f} us"
        )
    if "policy_families" in report:
        lines.append(
            f"each policy's step (forward, and the Hebbian update) against one env.step of "
            f"{POLICY_FAMILY_ENV}"
        )
        for row in report["policy_families"]:
            lines.append(
                f"  {row['policy']:<8} {row['shape']:<16} {row['params']:>7,} params  "
                f"{row['step_us']:7.2f} us  env.step {row['env_step_us']:6.2f} us  "
                f"share of a step {row['share']:6.1%}"
            )
    lines.append("")
    lines.append(
        f"{'environment':<18}{'bare 1 core':>12}{'scaling':>8}{'limit':>10}{'bare':>10}"
        f"{'physics':>10}{'policy':>7}{'gens':>5}{'train/rank':>12}{'efficiency':>11}"
        f"{'limit_ratio':>12}{'physics_ratio':>14}{'start-up':>9}{'idle':>6}   "
        "split of generation time"
    )
    for row in report["environments"]:
        train = row["train"]
        split = "  ".join(f"{k} {v:.1%}" for k, v in train["split"].items())
        lines.append(
            f"{row['env']:<18}{row['bare_solo_steps_per_s']:>12,.0f}{row['machine_scaling']:>8.2f}"
            f"{row['limit_steps_per_s']:>10,.0f}{row['bare_steps_per_s']:>10,.0f}"
            f"{_or_dash(row['physics_steps_per_s'], '10,.0f')}"
            f"{row['policy_share']:>7.1%}{train['generations']:>5}"
            f"{row['train_steps_per_s_per_rank']:>12,.0f}{row['efficiency']:>11.3f}"
            f"{row['limit_ratio']:>12.3f}{_or_dash(row['physics_ratio'], '14.3f')}"
            f"{train['startup_s']:>8.1f}s{train['idle']:>6.1%}   {split}"
        )
    settings = report["settings"]
    for row in report["environments"]:
        rounds = ", ".join(f"{value:.3f}" for value in row["efficiency_of_each_round"])
        lines.append(f"  {row['env']}: efficiency of each round {rounds}")
    lines += [
        "  (env-steps/s. bare 1 core: a loop of env.step with esmpi's policy on one core, the "
        "others idle;",
        f"   limit and bare: the same loop without and with the policy, {settings['ranks']} copies "
        "at once, per copy,",
        "   measured before and after each block of training generations and averaged; episodes "
        "as training's",
        "   (preset rules); scaling: bare / bare 1 core, what this machine gives each core when "
        "all are busy;",
        "   policy: share of a bare step spent in the policy forward (timed apart on this env's",
        "   observations; the rest is env.step and the loop);",
        f"   train/rank: esmpi training on {settings['ranks']} ranks, in blocks of gens "
        f"generations (about {settings['train_seconds']:g} s), per rank;",
        "   efficiency = train/rank / bare; each row is the round of median efficiency (all "
        "rounds below);",
        "   limit_ratio = train/rank / limit; physics: the bare loop's episodes replayed on the "
        "policy and mujoco.mj_step",
        "   alone, for the environments esmpi steps natively (- for the others); physics_ratio = "
        "train/rank / physics;",
        "   bare, limit and physics step through Gymnasium's reset; start-up: process start to "
        "the first generation; idle: mean share",
        f"   of time a rank waited for the busiest one. Episodes end at {settings['max_steps']} "
        "steps at most.)",
    ]
    if "strong_scaling" in report:
        scaling = report["strong_scaling"]
        lines.append("")
        lines.append(
            f"strong scaling {scaling['env']} popsize {scaling['popsize']}: "
            f"{scaling['steps_per_s_1_rank']:,.0f} steps/s on 1 rank, "
            f"{scaling['steps_per_s_2_ranks']:,.0f} on 2 (medians): "
            f"efficiency {scaling['efficiency']:.3f}"
        )
        pairs = ", ".join(f"{value:.3f}" for value in scaling["efficiency_of_each_pair"])
        lines.append(
            f"  each pair of blocks of {max(scaling['generations'])} generations or fewer, on 2 "
            f"ranks then on 1 (the other core idle): {pairs}; this machine's own scaling of the "
            "bare loop: "
            f"{scaling['machine_scaling']:.2f}"
        )
        overhead = report["overhead_big_population"]
        lines.append(
            f"noise + update + collectives at popsize {overhead['popsize']} on {overhead['env']}: "
            f"{overhead['noise_update_collectives_share']:.2%} of generation time"
        )
        lines.append("the update's share of a generation there, by strategy (same MLP):")
        for row in report["strategies"]:
            lines.append(
                f"  {row['strategy']:<12}{row['update_s'] * 1e3:>8.1f} ms of "
                f"{row['generation_s']:>6.2f} s  {row['update_share']:>7.2%}"
            )
        model = report["scaling_model"]
        lines.append("")
        lines.append(
            f"model of a generation at popsize {model['popsize']} "
            f"(episode {model['episode_s'] * 1e3:.0f} ms, "
            f"update {model['update_s'] * 1e3:.1f} ms, "
            f"collectives {model['collective_s'] * 1e6:.0f} us x log2 ranks)"
        )
        lines.append(f"  {'ranks':>6}{'s/gen':>10}{'speedup':>10}{'update share':>14}")
        for row in model["rows"]:
            lines.append(
                f"  {row['ranks']:>6}{row['generation_s']:>10.3f}{row['speedup']:>10.1f}"
                f"{row['update_share']:>14.2%}"
            )
    lines.append("")
    lines.append("noise table memory (node-shared): PSS per rank, MiB")
    for row in report["memory"]:
        per_rank = ", ".join(f"{value:.0f}" for value in row["pss_mib_per_rank"])
        lines.append(f"  {row['ranks']} rank(s): table {row['table_mib']:.0f} MiB; PSS {per_rank}")
    return "\n".join(lines)
