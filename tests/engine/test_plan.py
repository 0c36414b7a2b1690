"""Deterministic splits and step plans."""

from __future__ import annotations

from medkit.api.batch import Source
from medkit.data.split import split_indices
from medkit.engine.plan import StepPlan


def test_split_is_stable_and_order_independent():
    ids = [f"s{i}" for i in range(200)]
    train, val = split_indices(ids, 0.1)
    assert set(train).isdisjoint(val) and len(train) + len(val) == 200
    assert 5 <= len(val) <= 40
    rev = list(reversed(ids))
    _, val_rev = split_indices(rev, 0.1)
    assert {ids[i] for i in val} == {rev[i] for i in val_rev}


def test_split_holds_out_at_least_one_of_two():
    train, val = split_indices(["a", "b"], 0.0001)
    assert len(val) == 1 and len(train) == 1


def test_step_plan_is_a_pure_function_of_step():
    srcs = [Source("a", list(range(10))), Source("b", list(range(100, 130)), role="buffer")]
    p1 = StepPlan(srcs, batch_size=4, max_steps=50, seed=3, stage=1)
    p2 = StepPlan(srcs, batch_size=4, max_steps=50, seed=3, stage=1)
    assert [p1.step(s)[1] for s in range(50)] == [p2.step(s)[1] for s in range(50)]
    shares = sum(1 for s in range(50) if p1.step(s)[0].modality == "b") / 50
    assert 0.5 < shares < 0.95, "sources interleave in proportion to their sizes (30 vs 10)"


def test_epoch_covers_every_sample_once():
    p = StepPlan([Source("a", list(range(12)))], batch_size=4, max_steps=3, seed=0, stage=0)
    seen = sorted(i for s in range(3) for i in p.step(s)[1])
    assert seen == list(range(12))


def test_ranks_take_disjoint_slices():
    srcs = [Source("a", list(range(16)))]
    r0 = StepPlan(srcs, batch_size=4, max_steps=2, seed=0, stage=0, rank=0, world_size=2)
    r1 = StepPlan(srcs, batch_size=4, max_steps=2, seed=0, stage=0, rank=1, world_size=2)
    for s in range(2):
        assert set(r0.step(s)[1]).isdisjoint(r1.step(s)[1])


def test_train_view_shares_the_index_and_switches_augmentation(tmp_path):
    from medkit.testing.synthetic import SyntheticModality

    modality = SyntheticModality("synth_a", num_samples=8, size=(16, 16, 16))
    train = modality.dataset(modality.demo_data(tmp_path), train=True)
    evaluation = train.view(train=False)
    assert evaluation.ids is train.ids and train.train and not evaluation.train
    flipped = [i for i in range(50) if not (train.load(0, seed=i)["input"] == train.load(0)["input"]).all()]
    assert flipped, "the training view augments"
    assert all((evaluation.load(0, seed=i)["input"] == evaluation.load(0)["input"]).all() for i in range(10))


def test_allocation_is_exact_and_floors_the_current_modality():
    """A buffer 19× the current data would take 19 of 20 steps by size; the floor keeps at least
    ceil(min_current_fraction · max_steps) steps on the stage's own data, and the counts always sum
    to max_steps."""
    from medkit.engine.plan import allocate_steps

    assert allocate_steps([1, 19], [True, False], 10, 0.0) == [1, 9]  # by size share alone
    assert allocate_steps([1, 19], [True, False], 10, 0.5) == [5, 5]
    assert allocate_steps([1, 19], [True, False], 7, 0.5) == [4, 3]  # ceil(3.5)
    assert allocate_steps([3, 1, 1], [True, False, False], 10, 0.5) == [6, 2, 2]  # above the floor: by share
    for n in (1, 2, 9, 50):
        counts = allocate_steps([1, 30, 5], [True, False, False], n, 0.5)
        assert sum(counts) == n and counts[0] >= -(-n // 2)


def test_the_realised_mix_is_what_the_plan_runs():
    plan = StepPlan([Source("cur", list(range(4)), role="current"), Source("old", list(range(80)), role="buffer")],
                    batch_size=2, max_steps=12, seed=1, stage=1, min_current_fraction=0.5)
    roles = [plan.step(s)[0].role for s in range(12)]
    assert plan.mix() == {"cur/current": roles.count("current"), "old/buffer": roles.count("buffer")}
    assert roles.count("current") == 6  # the floor, not the 4/84 size share


def test_every_non_empty_buffer_rehearses_in_a_short_stage():
    """The proportional rule alone gave a 1-sample buffer 0 of 6 steps: a rehearsal stage that trains
    as sequential without a word. Each buffer now gets a step while the current floor holds."""
    from medkit.engine.plan import allocate_steps

    counts = allocate_steps([1000.0, 1.0], [True, False], max_steps=6, min_current_fraction=0.8)
    assert counts == [5, 1]
    counts = allocate_steps([1000.0, 1.0, 2.0, 3.0], [True, False, False, False], max_steps=20,
                            min_current_fraction=0.5)
    assert sum(counts) == 20 and all(c >= 1 for c in counts) and counts[0] >= 10


def test_a_buffer_without_a_step_is_named(caplog):
    """More buffers than spare steps: the floor wins, and the starved buffers are named with the fix."""
    srcs = [Source("cur", list(range(50))), Source("xray", [1], role="buffer"),
            Source("ct", [2, 3], role="buffer"), Source("mri", [4], role="buffer")]
    with caplog.at_level("WARNING", logger="medkit.engine.plan"):
        plan = StepPlan(srcs, batch_size=2, max_steps=4, seed=0, stage=1, min_current_fraction=0.5)
    assert plan.counts == [2, 1, 1, 0]  # the floor keeps 2; the larger buffers first, ties by order
    text = caplog.text
    assert "the mri buffer (1 samples) gets no step" in text and "min_current_fraction" in text
    assert "trainer.max_steps" in text
