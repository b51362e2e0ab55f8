"""Progressive task scheduling: the task mix each batch is drawn from, and the draws."""

from __future__ import annotations

import numpy as np
import pytest

from terramask.train.unigeoseg_schedule import TaskSampler, task_weights, training_progress

ALL = {"interactive": 10, "referring": 10, "reasoning": 10}


def test_the_mix_moves_from_interactive_to_reasoning_as_the_paper_says():
    start = task_weights(0.0, ALL)
    end = task_weights(1.0, ALL)
    # unnormalised: interactive 1 -> 0.7, referring 1, reasoning 1 - interactive
    assert start == pytest.approx({"interactive": 0.5, "referring": 0.5, "reasoning": 0.0})
    assert end == pytest.approx({"interactive": 0.35, "referring": 0.5, "reasoning": 0.15})
    middle = task_weights(0.5, ALL)
    assert middle == pytest.approx({"interactive": 0.85 / 2, "referring": 0.5,
                                    "reasoning": 0.15 / 2})  # fmt: skip
    assert task_weights(1.0, ALL, interactive_end=0.4)["reasoning"] == pytest.approx(0.3)


def test_epoch_curve_steps_once_per_epoch_and_none_follows_the_data_sizes():
    assert [training_progress("epoch", s, 30, s // 10, 3) for s in (0, 9, 10, 25)] == [
        0.0, 0.0, 0.5, 1.0]  # fmt: skip
    assert training_progress("linear", 15, 31, 1, 3) == pytest.approx(0.5)
    mix = task_weights(0.7, {"interactive": 6, "referring": 3, "reasoning": 1}, curve="none")
    assert mix == pytest.approx({"interactive": 0.6, "referring": 0.3, "reasoning": 0.1})


def test_tasks_without_data_get_nothing_and_no_data_is_refused():
    mix = task_weights(0.0, {"referring": 4, "reasoning": 2})
    assert mix == pytest.approx({"interactive": 0.0, "referring": 1.0, "reasoning": 0.0})
    only_reasoning = task_weights(0.0, {"reasoning": 2})
    assert only_reasoning["reasoning"] == 1.0
    with pytest.raises(ValueError):
        task_weights(0.5, {})


def test_the_sampler_draws_the_scheduled_mix_and_resumes_the_same_draws():
    pools = {"interactive": list(range(0, 5)), "referring": list(range(5, 10)),
             "reasoning": list(range(10, 15))}  # fmt: skip
    sampler = TaskSampler(pools, curve="linear", interactive_end=0.7, seed=3)
    for progress, expected in ((0.0, task_weights(0.0, ALL)), (1.0, task_weights(1.0, ALL))):
        tasks = [sampler.draw(progress, 2)[0] for _ in range(4000)]
        for task, share in expected.items():
            assert tasks.count(task) / len(tasks) == pytest.approx(share, abs=0.03)
    task, chosen = sampler.draw(1.0, 3)
    assert all(i in pools[task] for i in chosen)
    # every sample of a pool is used once before any is used again
    one_task = TaskSampler({"referring": [5, 6, 7, 8, 9]}, curve="linear", interactive_end=0.7,
                           seed=0)  # fmt: skip
    drawn = [one_task.draw(0.0, 1) for _ in range(5)]
    assert {t for t, _ in drawn} == {"referring"}
    assert sorted(i for _, ids in drawn for i in ids) == [5, 6, 7, 8, 9]
    state = sampler.state()
    ahead = [sampler.draw(0.5, 2) for _ in range(20)]
    again = TaskSampler(pools, curve="linear", interactive_end=0.7, seed=99)
    again.restore(state)
    assert [again.draw(0.5, 2) for _ in range(20)] == ahead
    assert np.isfinite(list(sampler.weights(0.3).values())).all()
