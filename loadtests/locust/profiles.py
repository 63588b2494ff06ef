"""Load profiles over time, chosen with `--load-profile` (a locust LoadTestShape).

- none (default): -u users, spawned at -r per second, held until -t: what locust does
  without a shape.
- step: start with `--step-users` (default a quarter of -u) and add as many every
  `--step-seconds`, up to -u; shows where latency turns as load grows.
- spike: a quarter of -u, then all -u at once for `--spike-seconds` in the middle of -t,
  then back to a quarter; shows how the queue absorbs a burst and how fast it drains.

The shape reads -u, -r and -t (`use_common_options`), so the same flags and the web UI's
fields drive every profile; the test ends at -t, or never without it (Ctrl-C, or the UI).
"""

from __future__ import annotations

from dataclasses import dataclass

from locust import LoadTestShape


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    users: int
    spawn_rate: float
    run_time: float | None  # seconds; None: until stopped
    step_users: int
    step_seconds: float
    spike_seconds: float

    def at(self, elapsed: float) -> tuple[int, float] | None:
        """(users, spawn rate) at `elapsed` seconds into the test; None: the test is over."""
        if self.run_time is not None and elapsed >= self.run_time:
            return None
        if self.name == "step":
            step = self.step_users or max(1, self.users // 4)
            steps = 1 + int(elapsed // self.step_seconds)
            return min(self.users, step * steps), self.spawn_rate
        if self.name == "spike":
            base = max(1, self.users // 4)
            middle = (self.run_time or 3 * self.spike_seconds) / 2
            start = middle - self.spike_seconds / 2
            if start <= elapsed < start + self.spike_seconds:
                return self.users, max(self.spawn_rate, float(self.users))  # all at once
            return base, max(self.spawn_rate, float(self.users))
        return self.users, self.spawn_rate


class LoadProfile(LoadTestShape):
    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        options = self.runner.environment.parsed_options
        profile = Profile(
            name=str(getattr(options, "load_profile", "none") or "none"),
            users=int(options.num_users or 1),
            spawn_rate=float(options.spawn_rate or 1),
            run_time=float(options.run_time) if options.run_time else None,
            step_users=int(getattr(options, "step_users", 0) or 0),
            step_seconds=float(getattr(options, "step_seconds", 10.0) or 10.0),
            spike_seconds=float(getattr(options, "spike_seconds", 10.0) or 10.0),
        )
        return profile.at(self.get_run_time())
