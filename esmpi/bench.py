"""`esmpi bench`: where training time goes, measured against what the simulator allows.

For each environment, in one run on this machine:
  limit  a loop of env.step with a fixed action and no policy at all (one core),
  bare   the same loop with esmpi's policy and a fixed parameter vector: the best any trainer
         built on this environment and policy could do per core,
  train  the real `esmpi train` under mpiexec for the generations that take about
         --train-seconds: env-steps/s per rank,
and efficiency = train / bare, limit_ratio = train / limit. Also: the policy forward per step
(numba against the numpy reference), the split of a generation (rollouts, load-imbalance idle,
update, checkpoint, everything else), start-up time, strong scaling from 1 to 2 ranks, noise-table
memory per rank, and a model of generation time for 1 to 1024 ranks built from these parts.
Absolute numbers drift on shared machines; the ratios are measured within one run.
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

from esmpi import checkpoint, envs, reference
from esmpi.config import Config
from esmpi.policy import (
    Actor,
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
    actor = Actor(spec)
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


def single_core_rates(env_id: str, seconds: float, cap: int) -> dict:
    """env-steps/s of a plain loop of env.step without a policy (limit) and with esmpi's (bare),
    each for about `seconds`, and the mean episode length of the bare loop. Episodes are the ones
    training runs: the environment's preset as `esmpi train` resolves it, its zero-action burn-in
    and its ends (the environment's, `--ignore-terminated`, `--early-stop` on the reward, or `cap`
    steps), so that the loops simulate the same kind of states training does."""
    from esmpi import presets
    from esmpi.rollout import NO_RULES, PROGRESS_TERM, EpisodeRules, progress_terms, zero_action

    config, _ = presets.resolve({"env": env_id})
    made, env, _ = envs.make_for_rollouts(config, quiet=True)
    spec = spec_for_spaces(env.observation_space, env.action_space, config)
    actor, theta = actor_for(spec, config.obs_clip), initial_theta(spec, seed=0)
    rules = EpisodeRules.from_config(config)
    ruled = rules != NO_RULES
    fixed_action, idle = env.action_space.sample(), zero_action(env.action_space)
    patience = rules.early_stop or cap + 1
    terms = progress_terms(env) if rules.fitness == "progress" else None
    envs.first_reset(made, 0)

    def loop(policy) -> tuple[float, float]:
        steps, episodes = 0, 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            obs, _ = env.reset()
            episodes += 1
            negative_run = 0
            for step in range(1, cap + 1):
                action = idle if step <= rules.burn_in else policy(obs)
                obs, reward, terminated, truncated, _ = env.step(action)
                if (terminated and not rules.ignore_terminated) or truncated:
                    break
                if ruled and step > rules.burn_in:  # rollout._ruled_episode's early stop
                    score = reward if terms is None else terms.rewards[PROGRESS_TERM]
                    negative_run = negative_run + 1 if score < 0 else 0
                    if negative_run > patience and step > rules.early_stop_after:
                        break
            steps += step
        return steps / (time.perf_counter() - started), steps / episodes

    limit, _ = loop(lambda obs: fixed_action)
    bare, episode_steps = loop(lambda obs: actor.act(obs, theta))
    # The policy's share of a step: its forward pass timed apart, on observations of this
    # environment, times the bare loop's steps per second.
    seen = visited_observations(env, lambda obs: actor.act(obs, theta), 200)
    forward_us = best_microseconds(lambda obs: actor.act(obs, theta), seen, 1000)
    env.close()
    return {
        "limit": limit,
        "bare": bare,
        "episode_steps": episode_steps,
        "policy_share": forward_us * 1e-6 * bare,
    }


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


def rates_probe(env_id: str, seconds: float, cap: int) -> None:
    """Run under mpiexec: every rank measures single_core_rates at once; rank 0 prints them."""
    from esmpi import parallel

    comm = parallel.world()
    rows = comm.gather(single_core_rates(env_id, seconds, cap), root=0)
    if comm.Get_rank() == 0:
        print(json.dumps(rows))


def concurrent_rates(env_id: str, copies: int, seconds: float, cap: int) -> dict:
    """single_core_rates per copy, with `copies` loops running at once (one per core, as the
    ranks of a training run are): the fair baseline for a run on that many ranks."""
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    code = f"from esmpi.bench import rates_probe; rates_probe({env_id!r}, {seconds}, {cap})"
    result = subprocess.run(
        [mpiexec, "-n", str(copies), sys.executable, "-c", code], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    rows = json.loads(result.stdout)
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def train_run(
    env_id: str, ranks: int, popsize: int, generations: int, folder: str, cap: int
) -> dict:
    """Run the real `esmpi train` under mpiexec and read its history back."""
    name = f"{env_id.replace('/', '-')}__{ranks}__{popsize}__{len(os.listdir(folder))}"
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    command = [mpiexec, "-n", str(ranks), sys.executable, "-m", "esmpi", "train"]
    command += ["--env", env_id, "--popsize", str(popsize), "--generations", str(generations)]
    command += ["--print-every", str(generations), "--folder", folder, "--run-name", name]
    command += ["--max-steps", str(cap)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    total = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr}")
    history = checkpoint.load(os.path.join(folder, name)).history
    generation_s = np.diff(np.concatenate([[0.0], history["wall_s"]]))
    steps = int(history["timesteps"][-1])
    wall = float(history["wall_s"][-1])
    rollout, idle = float(history["rollout_s"].sum()), float(history["idle_s"].sum())
    update, writing = float(history["update_s"].sum()), float(history["checkpoint_s"].sum())
    return {
        "ranks": ranks,
        "popsize": popsize,
        "generations": generations,
        "steps": steps,
        "steps_per_s_per_rank": steps / wall / ranks,
        "generation_s": float(generation_s.mean()),
        "startup_s": total - wall,
        # Shares of wall time: the busiest rank's episodes, the update, checkpoint writing, and
        # the rest (noise offsets, collectives, bookkeeping). Idle is the mean share of time a
        # rank waited for the busiest one (it overlaps the busiest rank's rollouts).
        "split": {
            "rollouts": rollout / wall,
            "update": update / wall,
            "checkpoint": writing / wall,
            "other": max(wall - rollout - update - writing, 0.0) / wall,
        },
        "idle": idle / wall,
        "update_s": update / generations,
        "rollout_s": rollout / generations,
    }


def memory_probe() -> None:
    """Run under mpiexec: build the node-shared noise table and print each rank's memory."""
    from esmpi import parallel

    comm = parallel.world()
    table = parallel.shared_noise_table(comm, Config().noise_table_size, 0)
    table[:: 1 << 12].sum()  # touch it
    with open("/proc/self/smaps_rollup") as handle:
        fields = dict(line.split(":", 1) for line in handle if ":" in line)
    pss = int(fields["Pss"].split()[0]) / 1024
    rss = int(fields["Rss"].split()[0]) / 1024
    rows = comm.gather({"rank": comm.Get_rank(), "pss_mib": pss, "rss_mib": rss}, root=0)
    if comm.Get_rank() == 0:
        print(json.dumps({"table_mib": table.nbytes / 2**20, "ranks": rows}))


def memory_per_rank(ranks: int) -> dict:
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    code = "from esmpi.bench import memory_probe; memory_probe()"
    result = subprocess.run(
        [mpiexec, "-n", str(ranks), sys.executable, "-c", code], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    probe = json.loads(result.stdout)
    pss = [row["pss_mib"] for row in probe["ranks"]]
    return {"ranks": ranks, "table_mib": probe["table_mib"], "pss_mib_per_rank": pss}


def allreduce_microseconds(ranks: int = 2) -> float:
    """Latency of the per-generation collectives, for the scaling model."""
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    code = (
        "import time, numpy as np\n"
        "from mpi4py import MPI\n"
        "comm = MPI.COMM_WORLD\n"
        "rows = np.zeros((129, 40))\n"
        "for _ in range(100): comm.Allreduce(MPI.IN_PLACE, rows)\n"
        "started = time.perf_counter()\n"
        "for _ in range(2000): comm.Allreduce(MPI.IN_PLACE, rows)\n"
        "if comm.Get_rank() == 0: print((time.perf_counter() - started) / 2000 * 1e6)\n"
    )
    result = subprocess.run(
        [mpiexec, "-n", str(ranks), sys.executable, "-c", code], capture_output=True, text=True
    )
    return float(result.stdout)


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
    """`repeats` rounds of a training run between two measurements of the loops on `ranks` cores
    (loops, run, loops, run, ..., loops: each run is bracketed by the loops before and after it).
    This VM's cores slow down by 10-30% for tens of seconds at a time, so one round can land on a
    slow spell; the row reports the round of median efficiency and lists every round's."""
    say(f"{env_id}: loops of env.step on 1 core, then on {ranks} cores at once")
    solo = concurrent_rates(env_id, 1, loop_seconds, cap)
    loops = [concurrent_rates(env_id, ranks, loop_seconds, cap)]
    generations = generations_lasting(train_seconds, loops[0], popsize, ranks)
    rounds = []
    for round_index in range(repeats):
        say(
            f"{env_id}: round {round_index + 1}/{repeats}, esmpi train on {ranks} ranks, popsize "
            f"{popsize}, {generations} generations, then the loops again"
        )
        trained = train_run(env_id, ranks, popsize, generations, folder, cap)
        loops.append(concurrent_rates(env_id, ranks, loop_seconds, cap))
        together = {key: (loops[-2][key] + loops[-1][key]) / 2 for key in loops[-1]}
        per_rank = trained["steps_per_s_per_rank"]
        rounds.append(
            {
                "env": env_id,
                "limit_steps_per_s": together["limit"],
                "bare_steps_per_s": together["bare"],
                "bare_solo_steps_per_s": solo["bare"],
                "bare_episode_steps": together["episode_steps"],
                "policy_share": together["policy_share"],
                "machine_scaling": together["bare"] / solo["bare"],
                "train_steps_per_s_per_rank": per_rank,
                "efficiency": per_rank / together["bare"],
                "limit_ratio": per_rank / together["limit"],
                "train": trained,
            }
        )
    median = sorted(rounds, key=lambda row: row["efficiency"])[(len(rounds) - 1) // 2]
    return {**median, "efficiency_of_each_round": [row["efficiency"] for row in rounds]}


def generations_lasting(seconds: float, rates: dict, popsize: int, ranks: int) -> int:
    """Generations of a training run on `ranks` ranks that take about `seconds`, estimated from
    the bare loop's rate and episode length: short episodes get many generations. At least 1; at
    most 100, as episodes may grow longer while the policy learns (CartPole's do)."""
    generation_s = (popsize + 1) * rates["episode_steps"] / (ranks * rates["bare"])
    return max(1, min(100, round(seconds / generation_s)))


def run(
    env_ids,
    ranks: int,
    popsize: int,
    train_seconds: float,
    loop_seconds: float,
    cap: int,
    big_popsize: int = 256,
    repeats: int = 3,
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
                f"HalfCheetah-v5: strong scaling 1 -> 2 ranks ({repeats} runs each, alternating), "
                f"and the update at popsize {big_popsize}"
            )
            generations = cheetah["train"]["generations"]
            one_s, two_s = [], []
            for _ in range(repeats):
                one_s.append(train_run("HalfCheetah-v5", 1, popsize, generations, folder, cap))
                two_s.append(train_run("HalfCheetah-v5", 2, popsize, generations, folder, cap))
            one = float(np.median([run["generation_s"] for run in one_s]))
            two = float(np.median([run["generation_s"] for run in two_s]))
            report["strong_scaling"] = {
                "env": "HalfCheetah-v5",
                "popsize": popsize,
                "generations": generations,
                "generation_s_1_rank": one,
                "generation_s_2_ranks": two,
                "efficiency": one / (2 * two),
                "efficiency_of_each_pair": [
                    a["generation_s"] / (2 * b["generation_s"])
                    for a, b in zip(one_s, two_s, strict=True)
                ],
                "machine_scaling": cheetah["machine_scaling"],
            }
            big = train_run("HalfCheetah-v5", ranks, big_popsize, 2, folder, cap)
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
            collective_s = allreduce_microseconds(ranks) * 1e-6
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
    lines.append("")
    lines.append(
        f"{'environment':<18}{'bare 1 core':>12}{'scaling':>8}{'limit':>10}{'bare':>10}"
        f"{'policy':>7}{'gens':>5}{'train/rank':>12}{'efficiency':>11}{'limit_ratio':>12}"
        f"{'start-up':>9}{'idle':>6}   split of generation time"
    )
    for row in report["environments"]:
        train = row["train"]
        split = "  ".join(f"{k} {v:.1%}" for k, v in train["split"].items())
        lines.append(
            f"{row['env']:<18}{row['bare_solo_steps_per_s']:>12,.0f}{row['machine_scaling']:>8.2f}"
            f"{row['limit_steps_per_s']:>10,.0f}{row['bare_steps_per_s']:>10,.0f}"
            f"{row['policy_share']:>7.1%}{train['generations']:>5}"
            f"{row['train_steps_per_s_per_rank']:>12,.0f}{row['efficiency']:>11.3f}"
            f"{row['limit_ratio']:>12.3f}{train['startup_s']:>8.1f}s{train['idle']:>6.1%}   {split}"
        )
    settings = report["settings"]
    for row in report["environments"]:
        rounds = ", ".join(f"{value:.3f}" for value in row["efficiency_of_each_round"])
        lines.append(f"  {row['env']}: efficiency of each round {rounds}")
    lines += [
        "  (env-steps/s. bare 1 core: a loop of env.step with esmpi's policy, alone;",
        f"   limit and bare: the same loop without and with the policy, {settings['ranks']} copies "
        "at once, per copy,",
        "   measured before and after each training run and averaged; episodes as training's "
        "(preset rules);",
        "   scaling: bare / bare 1 core, what this machine gives each core when all are busy;",
        "   policy: share of a bare step spent in the policy forward (timed apart on this env's",
        "   observations; the rest is env.step and the loop);",
        f"   train/rank: esmpi train on {settings['ranks']} ranks for gens generations (about "
        f"{settings['train_seconds']:g} s), per rank;",
        f"   efficiency = train/rank / bare; each row is the round of median efficiency of "
        f"{settings['repeats']};",
        "   limit_ratio = train/rank / limit; start-up: to the first generation; idle: mean share",
        f"   of time a rank waited for the busiest one. Episodes end at {settings['max_steps']} "
        "steps at most.)",
    ]
    if "strong_scaling" in report:
        scaling = report["strong_scaling"]
        lines.append("")
        lines.append(
            f"strong scaling {scaling['env']} popsize {scaling['popsize']}: "
            f"{scaling['generation_s_1_rank']:.2f} s/gen on 1 rank, "
            f"{scaling['generation_s_2_ranks']:.2f} s/gen on 2 (medians): "
            f"efficiency {scaling['efficiency']:.3f}"
        )
        pairs = ", ".join(f"{value:.3f}" for value in scaling["efficiency_of_each_pair"])
        lines.append(
            f"  each 1-rank/2-rank pair of runs: {pairs}; this machine's own scaling of the bare "
            f"loop: {scaling['machine_scaling']:.2f}"
        )
        overhead = report["overhead_big_population"]
        lines.append(
            f"noise + update + collectives at popsize {overhead['popsize']} on {overhead['env']}: "
            f"{overhead['noise_update_collectives_share']:.2%} of generation time"
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
