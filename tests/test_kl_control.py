"""KL controllers: the PID controller holds the target on a stub policy; options reach the agents;
the coefficients a run charged are replayed exactly from its KL curve."""

from __future__ import annotations

import json

import numpy as np
import pytest
from agents_world import command_line_preset, make_env, one_thread  # noqa: F401
from stable_baselines3.common.callbacks import BaseCallback

from llm_gym.agents import KLController, PIDKLController, TokenPPO
from llm_gym.agents.kl import KL_CONTROLLERS, coefficient_trace, make_kl_controller
from llm_gym.experiments.kl_control import coefficient_curves, kl_band_table, rollout_steps
from llm_gym.experiments.presets import ComparePreset
from llm_gym.experiments.summary import Curves, smooth


class StubPolicy:
    """A fake policy whose KL to the reference responds to the coefficient, deterministically.

    Learning pushes the policy toward the KL-regularised optimum, whose KL falls as the
    coefficient rises: ``kl* = drive / (coef + 0.02)``; the policy closes ``rate`` of the
    gap per update, and the drive (what there is to gain by moving) ramps up over the
    first ``ramp`` updates, as a reward's gradient does while the policy discovers it.
    """

    def __init__(self, drive: float, rate: float = 0.15, ramp: int = 30) -> None:
        self.drive, self.rate, self.ramp, self.kl, self.updates = drive, rate, ramp, 0.0, 0

    def update(self, coef: float) -> float:
        drive = self.drive * min(1.0, self.updates / self.ramp)
        self.kl += self.rate * (drive / (coef + 0.02) - self.kl)
        self.updates += 1
        return self.kl


def run_stub(controller, drive: float, rate: float, updates: int = 150) -> np.ndarray:
    policy, kls = StubPolicy(drive, rate), []
    for _ in range(updates):
        kl = policy.update(controller.coef)
        kls.append(kl)
        controller.update(kl, steps=1024)
    return np.asarray(kls)


@pytest.mark.parametrize("drive", [0.5, 2.0, 4.0])
@pytest.mark.parametrize("rate", [0.05, 0.15, 0.4])
def test_pid_controller_holds_the_target_on_a_stub_policy(drive, rate):
    # drives 0.5-4 need equilibrium coefficients of 0.06-0.65 (the real runs' range)
    kls = run_stub(PIDKLController(0.05, target=6.0), drive, rate)
    held = smooth(kls, 5)[30:]
    assert held.min() >= 0.75 * 6.0 and held.max() <= 1.25 * 6.0, (held.min(), held.max())


def test_the_adaptive_controller_does_not_hold_it_on_the_same_stub():
    # the reason for the PID controller: ~2% per update cannot follow a strong drive
    kls = run_stub(KLController(0.05, target=6.0), drive=2.0, rate=0.15)
    assert smooth(kls, 5)[30:].max() > 2 * 6.0


def test_pid_controller_steps():
    controller = PIDKLController(0.05, target=6.0, kp=0.1, ki=0.02, kd=0.5, coef_max=0.5)
    assert controller.update(12.0, 1024) == pytest.approx(0.07 + 0.1)  # no rise yet
    # the error rose by 1: the derivative adds kd * 1 and the cap holds 0.11 + 0.2 + 0.5
    assert controller.update(18.0, 1024) == 0.5
    # far below: the coefficient drops at once (0.09 - 0.1, clipped at 0), not by 2%
    assert controller.update(0.0, 1024) == 0.0
    assert controller.integral == pytest.approx(0.09)
    assert controller.update(float("nan"), 1024) == controller.coef  # no KL: unchanged
    for _ in range(50):
        controller.update(0.0, 1024)
    assert controller.integral == controller.coef == 0.0  # anti-windup: never negative


def test_controller_options_are_checked():
    assert KL_CONTROLLERS == ("adaptive", "pid")
    assert isinstance(make_kl_controller("adaptive", 0.05, 6.0), KLController)
    with pytest.raises(ValueError, match="kl_controller must be one of"):
        make_kl_controller("bang-bang", 0.05, 6.0)
    with pytest.raises(ValueError, match="needs a target > 0 nats, got None"):
        PIDKLController(0.05, None)
    with pytest.raises(ValueError, match="kp must be a finite number >= 0, got -1"):
        PIDKLController(0.05, 6.0, kp=-1)
    with pytest.raises(ValueError, match="kl_controller must be one of"):
        ComparePreset(kl_controller="fast")
    with pytest.raises(ValueError, match="'pid' needs a kl_target"):
        ComparePreset(kl_controller="pid", kl_target=None)
    with pytest.raises(ValueError, match="kl_controller must be one of"):
        TokenPPO("CausalLMPolicy", make_env(max_new_tokens=2), n_steps=2, kl_controller="x")


class CoefRecorder(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.kls: list[float] = []
        self.coefs: list[float] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.kls.append(self.model.rollout_stats["kl_per_completion"])
        self.coefs.append(self.model.rollout_stats["kl_coef"])


@pytest.mark.parametrize("kind", ["adaptive", "pid"])
def test_the_coefficients_a_run_charged_are_replayed_from_its_kl(kind, tmp_path):
    model = TokenPPO(
        "CausalLMPolicy",
        make_env(max_new_tokens=4, eos_ends_episode=False),
        n_steps=4,
        batch_size=8,
        n_envs=2,
        seed=0,
        learning_rate=1e-3,
        kl_target=0.05,
        kl_horizon=16,
        kl_controller=kind,
    )
    assert type(model.kl) is {"adaptive": KLController, "pid": PIDKLController}[kind]
    recorder = CoefRecorder()
    model.learn(4 * 2 * 5, callback=recorder)
    fresh = make_kl_controller(kind, 0.05, 0.05, 16)
    assert coefficient_trace(fresh, recorder.kls, steps=8).tolist() == recorder.coefs
    assert fresh.coef == 0.05  # the replay runs on a copy
    model.save(tmp_path / "model")
    loaded = TokenPPO.load(tmp_path / "model")
    assert type(loaded.kl) is type(model.kl) and loaded.kl.coef == model.kl.coef


def test_group_agents_take_the_controller_option():
    import gymnasium as gym

    import llm_gym  # noqa: F401
    from llm_gym.agents import TokenRLOO

    envs = gym.make_vec("LLMCompletion-v0", num_envs=4, group_size=2, max_new_tokens=3)
    model = TokenRLOO("CausalLMPolicy", envs, batch_size=6, seed=0, kl_controller="pid")
    assert isinstance(model.kl, PIDKLController)


def test_the_preset_reaches_the_agent_and_old_folders_read_as_adaptive(tmp_path, monkeypatch):
    from llm_gym.experiments.runs import make_agent, run_compare

    preset = ComparePreset(n_envs=2, max_new_tokens=4, kl_controller="pid")
    assert isinstance(make_agent("sparse", 0, preset).kl, PIDKLController)
    assert ComparePreset().kl_controller == "adaptive"  # what every folder before it ran

    import llm_gym.experiments.runs as runs

    def fake_run(method, seed, preset, out_dir, threads=None):
        return [
            {"method": method, "seed": seed, "update": u, "score": u, "kl": 6.0} for u in (0, 1)
        ]

    monkeypatch.setattr(runs, "run_one", fake_run)
    old = ComparePreset(methods=("sparse",), seeds=1, updates=2)
    run_compare(old, tmp_path, progress=False, smoothing=1, fidelity=False)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["kl_controller"]  # a folder written before the option existed
    (tmp_path / "config.json").write_text(json.dumps(config))
    run_compare(old, tmp_path, progress=False, smoothing=1, fidelity=False)  # resumes
    with pytest.raises(ValueError, match="kl_controller: 'adaptive' there, 'pid' now"):
        run_compare(
            ComparePreset(methods=("sparse",), seeds=1, updates=2, kl_controller="pid"),
            tmp_path,
            progress=False,
        )


def test_kl_band_table_and_replayed_coefficients_from_curves():
    kls = Curves({"sparse": {0: np.full(40, 6.0), 1: np.full(40, 9.0)}})  # seed mean 7.5: inside
    preset = ComparePreset(kl_controller="pid")
    coefs = coefficient_curves(kls, preset)
    expected = coefficient_trace(PIDKLController(0.05, 6.0), np.full(40, 9.0), 1024)
    np.testing.assert_array_equal(coefs.values["sparse"][1], expected)
    table = kl_band_table(kls, 6.0, coefs=coefs)
    assert "| sparse | 2 | 100% | yes | 7.50, 7.50 | 0 | 100% |" in table
    assert rollout_steps(ComparePreset(n_envs=4, max_new_tokens=(8, 12))) == 48


def test_kl_control_of_an_old_folder_from_the_command_line(tmp_path):
    from llm_gym.experiments.kl_control import main

    rows = ["method,seed,update,score,kl"] + [f"sparse,0,{u},0.0,{3.0 * u}" for u in range(40)]
    (tmp_path / "curves.csv").write_text("\n".join(rows) + "\n")
    main([str(tmp_path / "curves.csv"), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "kl_control.md").read_text()
    assert "Controller: `adaptive`" in text and "| sparse | 1 | 0% | no |" in text
    assert (tmp_path / "out" / "kl_control.png").stat().st_size > 0


def test_the_noise_table_separates_fresh_noise_from_movement_that_persists():
    from llm_gym.experiments.kl_control import detrended_autocorrelation, kl_noise_table

    rng = np.random.default_rng(1)
    white = [6 + rng.normal(0, 1, 600) for _ in range(4)]
    # an AR(1) process: 0.8 of each update's deviation is still there the next
    persistent = []
    for _ in range(4):
        x = np.zeros(600)
        for t in range(1, 600):
            x[t] = 0.8 * x[t - 1] + rng.normal(0, 0.6)
        persistent.append(6 + x)
    assert abs(np.mean([detrended_autocorrelation(c) for c in white])) < 0.12
    assert np.mean([detrended_autocorrelation(c) for c in persistent]) > 0.5
    kls = Curves({"white": dict(enumerate(white)), "persistent": dict(enumerate(persistent))})
    rows = {line.split(" | ")[0][2:]: line for line in kl_noise_table(kls).splitlines()[2:]}
    # the sd columns, computed here independently
    cells = rows["white"].strip("| ").split(" | ")
    assert float(cells[2]) == pytest.approx(np.mean([c[30:].mean() for c in white]), abs=0.006)
    assert float(cells[3]) == pytest.approx(np.mean([c[30:].std(ddof=1) for c in white]), abs=0.006)
    assert float(cells[4]) == pytest.approx(np.mean(white, axis=0)[30:].std(ddof=1), abs=0.006)
    assert detrended_autocorrelation(np.ones(10)) != detrended_autocorrelation(np.ones(10))  # nan


def test_the_coefficient_cap_reaches_the_agents_and_the_replay():
    from llm_gym.experiments.runs import make_agent

    preset = ComparePreset(n_envs=2, max_new_tokens=4, kl_controller="pid", kl_coef_max=4.0)
    assert make_agent("sparse", 0, preset).kl.coef_max == 4.0
    group = ComparePreset(n_envs=4, max_new_tokens=4, agent="rloo", group_size=2, kl_coef_max=3.0)
    assert make_agent("sparse", 0, group).kl.coef_max == 3.0
    # a KL far above target drives the coefficient to the cap, which the replay must share
    kls = Curves({"sparse": {0: np.full(60, 30.0)}})
    capped = coefficient_curves(kls, preset).values["sparse"][0]
    default = coefficient_curves(kls, ComparePreset(kl_controller="pid")).values["sparse"][0]
    assert capped.max() == 4.0 and default.max() == 1.0
    with pytest.raises(ValueError, match="kl_coef_max must be a number > 0, got 0"):
        ComparePreset(kl_coef_max=0)


def test_kl_coef_max_from_the_command_line(tmp_path, monkeypatch):
    preset = command_line_preset(["--kl-coef-max", "2.5", "--out", str(tmp_path)], monkeypatch)
    assert preset.kl_coef_max == 2.5


def test_update_kl_limit_spends_a_fraction_of_the_budget_left():
    from llm_gym.agents.kl import update_kl_limit

    assert update_kl_limit(kl=1.0, target=4.0, length=10, fraction=0.5) == pytest.approx(0.15)
    assert update_kl_limit(kl=4.0, target=4.0, length=10, fraction=0.5) == 1e-4  # at target
    assert update_kl_limit(kl=9.0, target=4.0, length=10, fraction=0.5, floor=0.01) == 0.01
    assert update_kl_limit(kl=float("nan"), target=4.0, length=10, fraction=0.5) == 1e-4
    with pytest.raises(ValueError, match="fraction must be a finite number > 0, got -0.5"):
        update_kl_limit(kl=1.0, target=4.0, length=10, fraction=-0.5)
    with pytest.raises(ValueError, match="length must be a finite number > 0, got 0"):
        update_kl_limit(kl=1.0, target=4.0, length=0, fraction=0.5)


class TrainRecorder(BaseCallback):
    """Each update's ``target_kl`` and how many epochs SB3's PPO ran, read after the update."""

    def __init__(self) -> None:
        super().__init__()
        self.limits: list[float | None] = []
        self.epochs: list[int] = []
        self.stats: list[dict[str, float]] = []
        self._updates_before = 0

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        # the update of the previous rollout has run: SB3 counts one per epoch it ran
        if self.stats:
            self.epochs.append(self.model._n_updates - self._updates_before)
            self.limits.append(self.model.target_kl)
        self._updates_before = self.model._n_updates

    def _on_rollout_end(self) -> None:
        self.stats.append(dict(self.model.rollout_stats))


def _constrained_model(fraction: float | None, kl_target: float) -> TokenPPO:
    return TokenPPO(
        "CausalLMPolicy",
        make_env(max_new_tokens=4, eos_ends_episode=False),
        n_steps=4,
        batch_size=2,
        n_envs=4,
        n_epochs=4,
        seed=0,
        learning_rate=3e-3,
        kl_target=kl_target,
        kl_controller="pid",
        kl_step_fraction=fraction,
    )


def test_a_constrained_update_sets_target_kl_from_the_budget_and_stops_its_epochs():
    from llm_gym.agents.kl import update_kl_limit

    free = _constrained_model(None, kl_target=1e-6)
    free_recorder = TrainRecorder()
    free.learn(4 * 4 * 4, callback=free_recorder)
    assert free.target_kl is None and free_recorder.epochs == [4, 4, 4]

    # a target below any KL the policy can have: every update is held to the floor
    held = _constrained_model(0.5, kl_target=1e-6)
    recorder = TrainRecorder()
    held.learn(4 * 4 * 4, callback=recorder)
    expected = [
        update_kl_limit(s["kl_per_completion"], 1e-6, s["completion_length"], 0.5)
        for s in recorder.stats[: len(recorder.limits)]
    ]
    assert recorder.limits == expected == [1e-4] * 3
    assert max(recorder.epochs) < 4  # SB3 stopped the epochs early under the limit

    # a target far above the KL: the limit is the budget's fraction, the update runs free
    loose = _constrained_model(0.5, kl_target=1e3)
    loose_recorder = TrainRecorder()
    loose.learn(4 * 4 * 4, callback=loose_recorder)
    assert loose_recorder.limits == [
        update_kl_limit(s["kl_per_completion"], 1e3, s["completion_length"], 0.5)
        for s in loose_recorder.stats[:3]
    ]
    assert loose_recorder.epochs == [4, 4, 4]


def test_constrained_update_options_are_checked(tmp_path, monkeypatch):
    from llm_gym.experiments.runs import make_agent

    env = make_env(max_new_tokens=4)
    with pytest.raises(ValueError, match="kl_step_fraction=0.5 needs a kl_target"):
        TokenPPO("CausalLMPolicy", env, n_steps=4, n_envs=2, kl_target=None, kl_step_fraction=0.5)
    with pytest.raises(ValueError, match="pass kl_step_fraction or target_kl, not both"):
        TokenPPO("CausalLMPolicy", env, n_steps=4, n_envs=2, kl_step_fraction=0.5, target_kl=0.1)
    with pytest.raises(ValueError, match="fraction must be a finite number > 0, got 0"):
        TokenPPO("CausalLMPolicy", env, n_steps=4, n_envs=2, kl_step_fraction=0.0)
    with pytest.raises(ValueError, match="kl_step_fraction must be None or a number > 0"):
        ComparePreset(kl_step_fraction=-1.0)
    with pytest.raises(ValueError, match="needs agent 'ppo' and a kl_target; got agent='rloo'"):
        ComparePreset(agent="rloo", kl_step_fraction=0.5)
    preset = ComparePreset(n_envs=2, max_new_tokens=4, kl_controller="pid", kl_step_fraction=0.3)
    assert make_agent("sparse", 0, preset).kl_step_fraction == 0.3
    assert ComparePreset().kl_step_fraction is None  # what every folder before it ran

    argv = ["--kl-step-fraction", "0.25", "--out", str(tmp_path)]
    assert command_line_preset(argv, monkeypatch).kl_step_fraction == 0.25


def test_band_sides_table_splits_misses_by_side_and_penalty_state():
    from llm_gym.experiments.kl_control import kl_band_sides_table

    kls = Curves(
        {
            "sparse": {
                0: np.r_[np.full(20, 3.0), np.full(20, 6.0)],
                1: np.r_[np.full(10, 3.0), np.full(10, 9.0), np.full(20, 12.0)],
            }
        }
    )
    # seed-mean KL: 3 (updates 0-9, below 4.5), 6 (10-19, inside), 9 (20-39, above 7.5)
    coefs = Curves(
        {
            "sparse": {
                0: np.r_[np.zeros(20), np.full(20, 0.1)],
                1: np.r_[np.zeros(10), np.full(30, 0.2)],
            }
        }
    )
    table = kl_band_sides_table(kls, coefs, 6.0, start=0, smoothing=1)
    # below: both runs' penalty off; inside: seed 0's only; above: neither
    assert table.splitlines()[2] == "| sparse | 2 | 25% | 50% | 100% | 50% | 0% |"
    # from update 10 on nothing is below the band: no share of runs to report there
    later = kl_band_sides_table(kls, coefs, 6.0, start=10, smoothing=1).splitlines()[2]
    assert later == "| sparse | 2 | 0% | 67% | - | 50% | 0% |"


def test_a_run_held_below_the_target_has_the_pid_penalty_off():
    from llm_gym.experiments.kl_control import kl_band_sides_table

    kls = Curves({"sparse": {0: np.full(60, 2.0)}})  # a third of the 6-nat target throughout
    coefs = coefficient_curves(kls, ComparePreset(kl_controller="pid"))
    # the integral empties within a few updates; from then on the coefficient is 0
    assert coefs.values["sparse"][0][30:].max() == 0.0
    row = kl_band_sides_table(kls, coefs, 6.0).splitlines()[2]
    assert row == "| sparse | 1 | 100% | 0% | 100% | - | - |"


@pytest.mark.parametrize("rate", [0.05, 0.15, 0.4])
def test_larger_pid_gains_hold_a_target_that_needs_a_large_coefficient(rate):
    # drive 21 needs a coefficient of 3.5 to hold 6 nats (as the 146-token long task):
    # the default gains take over a hundred updates to reach it; about six times them do not
    def held(gains):
        controller = make_kl_controller("pid", 0.05, 6.0, coef_max=5.0, pid_gains=gains)
        return smooth(run_stub(controller, drive=21.0, rate=rate), 5)[30:]

    default, scaled = held(None), held((1.0, 0.5, 0.0))
    assert default.max() > 1.25 * 6.0
    assert scaled.min() >= 0.75 * 6.0 and scaled.max() <= 1.25 * 6.0, (scaled.min(), scaled.max())


def test_pid_gains_reach_the_agents_and_the_replay(tmp_path, monkeypatch):
    from llm_gym.agents import TokenRLOO
    from llm_gym.experiments.runs import make_agent

    gains = (0.75, 0.4, 0.1)
    preset = ComparePreset(n_envs=2, max_new_tokens=4, kl_controller="pid", kl_pid_gains=gains)
    kl = make_agent("sparse", 0, preset).kl
    assert (kl.kp, kl.ki, kl.kd) == gains
    group = ComparePreset(
        n_envs=4, max_new_tokens=4, agent="rloo", group_size=2, kl_controller="pid"
    )
    assert isinstance(make_agent("sparse", 0, group).kl, PIDKLController)
    import gymnasium as gym

    envs = gym.make_vec("LLMCompletion-v0", num_envs=4, group_size=2, max_new_tokens=3)
    rloo = TokenRLOO(
        "CausalLMPolicy", envs, batch_size=6, seed=0, kl_controller="pid", kl_pid_gains=gains
    )
    assert (rloo.kl.kp, rloo.kl.ki, rloo.kl.kd) == gains
    # the replay uses the gains the runs used
    kls = Curves({"sparse": {0: np.r_[np.full(20, 9.0), np.full(20, 4.0)]}})
    replayed = coefficient_curves(kls, preset).values["sparse"][0]
    expected = coefficient_trace(
        PIDKLController(0.05, 6.0, kp=0.75, ki=0.4, kd=0.1), kls.values["sparse"][0], 1
    )
    np.testing.assert_array_equal(replayed, expected)
    default = coefficient_curves(kls, ComparePreset(kl_controller="pid")).values["sparse"][0]
    assert not np.array_equal(replayed, default)
    argv = [
        "--kl-controller",
        "pid",
        "--kl-pid-gains",
        "0.75",
        "0.4",
        "0.1",
        "--out",
        str(tmp_path),
    ]
    assert command_line_preset(argv, monkeypatch).kl_pid_gains == gains


def test_pid_gain_options_are_checked():
    with pytest.raises(
        ValueError, match=r"kl_pid_gains=\(1, 2, 0\) are the gains of kl_controller 'pid'"
    ):
        ComparePreset(kl_pid_gains=(1, 2, 0))
    with pytest.raises(
        ValueError, match=r"three finite numbers >= 0 \(kp, ki, kd\), got \(1, -2, 0\)"
    ):
        ComparePreset(kl_controller="pid", kl_pid_gains=(1, -2, 0))
    with pytest.raises(
        ValueError, match=r"kl_pid_gains must be three numbers \(kp, ki, kd\), got \(1.0,\)"
    ):
        make_kl_controller("pid", 0.05, 6.0, pid_gains=(1.0,))
    with pytest.raises(ValueError, match="got kl_controller='adaptive'"):
        TokenPPO("CausalLMPolicy", make_env(), n_envs=2, n_steps=4, kl_pid_gains=(0.1, 0.1, 0.0))
    with pytest.raises(
        ValueError, match="PIDKLController: ki must be a finite number >= 0, got -1.0"
    ):
        make_kl_controller("pid", 0.05, 6.0, pid_gains=(0.1, -1.0, 0.0))
