"""Ray's start-up time-out (issue 29): under load, `start` failed with "The current node timed out
during startup", with no hint that a second start works.

Ray's raylet gets a fixed 30 s to register; provoking a real time-out costs a minute or more of a
loaded machine per try, so these tests stand a named thin fake in for `ray.init`: a function that
raises the exception Ray 2.x raises (`ray/_private/node.py`, "The current node timed out during
startup. ...") a given number of times. The retry logic and the CLI's line are real.
"""

from __future__ import annotations

import logging

import pytest

from autotune.workers import RayStartError, start_local_ray

RAY_NODE_TIMEOUT = (
    "The current node timed out during startup. This could happen because some of the raylet failed to "
    "startup or the GCS has become overloaded."
)


class TimingOutRayInit:
    """A stand-in for `ray.init` that times out as Ray does `failures` times, then starts."""

    def __init__(self, failures: int, error: str = RAY_NODE_TIMEOUT) -> None:
        self.failures = failures
        self.error = error
        self.calls: list[dict[str, object]] = []
        self.shutdowns = 0

    def init(self, **options: object) -> None:
        self.calls.append(options)
        if len(self.calls) <= self.failures:
            raise Exception(self.error)  # Ray raises a bare Exception here

    def shutdown(self) -> None:
        self.shutdowns += 1


def test_a_ray_start_up_that_times_out_once_is_tried_again_with_the_same_options(caplog):
    fake = TimingOutRayInit(failures=1)
    with caplog.at_level(logging.INFO, logger="autotune.workers"):
        start_local_ray(fake.init, fake.shutdown, num_cpus=2)
    assert fake.calls == [{"num_cpus": 2}, {"num_cpus": 2}]
    assert fake.shutdowns == 1  # what the timed-out start left running is ended before the retry
    # said in the daemon's log (INFO), not on a terminal's stderr beside the study's own lines
    assert [(r.levelno, "trying once more" in r.getMessage()) for r in caplog.records] == [(logging.INFO, True)]


def test_a_second_time_out_fails_with_one_line_saying_what_to_try():
    fake = TimingOutRayInit(failures=2)
    with pytest.raises(RayStartError) as raised:
        start_local_ray(fake.init, fake.shutdown, num_cpus=2)
    message = str(raised.value)
    assert len(fake.calls) == 2 and fake.shutdowns == 2
    assert "\n" not in message and "timed out starting, 2 times" in message
    for hint in ("fewer --workers", "less load", "--ray-address"):
        assert hint in message, message


def test_another_ray_failure_is_not_tried_again():
    fake = TimingOutRayInit(failures=1, error="Ray has not been built with this Python")
    with pytest.raises(Exception, match="not been built"):
        start_local_ray(fake.init, fake.shutdown)
    assert len(fake.calls) == 1 and fake.shutdowns == 0
