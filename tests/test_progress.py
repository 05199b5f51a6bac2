"""The page's progress bar: monotone over a request's phases and cascade stages, and drawn only when a request
is long enough to need it (each update the page draws takes CPU from the model on a small machine)."""

from demo.progress import Progress, throttled


def test_updates_wait_for_the_first_half_second_then_come_at_most_four_times_a_second():
    now, seen = [0.0], []
    send = throttled(lambda f, t: seen.append((now[0], f)), clock=lambda: now[0])
    for t in (0.1, 0.4, 0.5, 0.6, 0.74, 0.75, 0.9, 1.3):
        now[0] = t
        send(t / 2, "step")
    assert [t for t, _ in seen] == [0.5, 0.75, 1.3]


def test_the_bar_never_goes_back_across_phases_and_stages():
    seen = []
    bar = Progress(lambda f, t: seen.append((f, t)))
    invert = bar.phase("inverting", 0.0, 0.6, stages=2)
    for _ in range(2):
        for done in range(1, 4):
            invert(done, 3)
    edit = bar.phase("editing", 0.6, 1.0)
    for done in range(1, 5):
        edit(done, 4)
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert seen[3][1] == "inverting, stage 2/2: step 1/3" and seen[-1][1] == "editing: step 4/4"
