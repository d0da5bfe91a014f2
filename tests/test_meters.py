from jobrl_async.ops.meters import BusyMeter, Window


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_overlapping_work_counts_once() -> None:
    clock = Clock()
    m = BusyMeter(clock)
    m.enter()
    clock.t = 1.0
    m.enter()  # a second call overlaps the first
    clock.t = 2.0
    m.exit()
    clock.t = 3.0
    m.exit()
    clock.t = 10.0
    assert m.busy_s == 3.0
    m.enter()
    clock.t = 11.5
    assert m.busy_s == 4.5  # running work is included


def test_window_fractions_per_lap() -> None:
    clock = Clock()
    m = BusyMeter(clock)
    w = Window({"judge": m}, clock)
    m.enter()
    clock.t = 2.0
    m.exit()
    clock.t = 4.0
    assert w.lap() == {"judge": 0.5}
    clock.t = 8.0
    assert w.lap() == {"judge": 0.0}
