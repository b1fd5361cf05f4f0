"""Rules a study learns from its failures: knob combinations never to propose again.

A trial that fails with "cannot use the graph capture feature" teaches nothing the second
time. When two or more trials fail with the same *failure class* (the reason with its
numbers, paths and quoted names blanked out), the knob values they have in common are
taken as the cause: a configuration holding all of them is predicted to fail the same way,
so the study does not run it. The rule is the intersection of every failing configuration
of that class, so each new failure can only make it more general, and a rule that a
*successful* trial satisfies is wrong by construction and is not enforced (a coincidence of
two unrelated failures cannot rule out what is known to work; trial 0 guards the defaults).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Failures that say nothing about the configuration: the machine or the user stopped it.
NOT_ABOUT_CONFIG = ("interrupted", "cancelled", "budget spent", "stopped", "duplicate of", "ruled out")
MIN_FAILURES = 2
# A complete trial this many times slower per sample than the defaults at its batch is "known
# slow": two of them sharing a non-default knob value make that value a rule, like two failures
# (unless a trial that is not slow holds it too).
KNOWN_SLOW = 2.0
KNOWN_SLOW_REASON = "known slow: at least twice the defaults' time per sample at its batch"
_BLANKS = (
    (re.compile(r"(/[\w.+-]+)+"), "<path>"),
    (re.compile(r"0x[0-9a-fA-F]+"), "<hex>"),
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<name>"),
    (re.compile(r"\d+(\.\d+)?(e-?\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def failure_class(reason: str) -> str | None:
    """The reason with what varies from run to run blanked out, or None when the failure is
    not about the configuration (interrupted, cancelled, out of budget)."""
    text = reason.strip()
    if not text or any(marker in text.lower() for marker in NOT_ABOUT_CONFIG):
        return None
    # "too slow: median 41.2 ms ... over 10x the default's 3.1 ms" is one class whatever the numbers.
    text = text.split(" (", 1)[0] if text.startswith("too slow") else text
    for pattern, blank in _BLANKS:
        text = pattern.sub(blank, text)
    return text[:160].strip()


@dataclass
class Rule:
    """Knob values that, held together, made every trial of one failure class fail."""

    knobs: dict[str, Any]
    reason: str  # the failure class: numbers blanked, so that one rule covers every instance
    trials: list[int] = field(default_factory=list)
    enforced: bool = True
    example: str = ""  # the first trial's own reason, numbers and all: what a user is shown

    def matches(self, config: Mapping[str, Any]) -> bool:
        return bool(self.knobs) and all(k in config and config[k] == v for k, v in self.knobs.items())

    def describe(self) -> str:
        knobs = ", ".join(f"{k}={v}" for k, v in self.knobs.items())
        source = f"trials {', '.join(map(str, self.trials))}" if self.trials else "from the space file"
        return f"{knobs} -> {self.reason} ({source})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "knobs": self.knobs,
            "reason": self.reason,
            "trials": self.trials,
            "enforced": self.enforced,
            "example": self.example,
        }


@dataclass
class FailureRules:
    """Failures seen so far, grouped by class, and the rules they imply.

    Args:
        succeeded (list): configurations known to work (a rule they satisfy is not enforced).
        defaults (dict): the all-defaults configuration (its values are the last suspects).
        fixed (list): rules known before the study (the space file's `avoid:` list), always
            enforced.
    """

    failures: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    succeeded: list[dict[str, Any]] = field(default_factory=list)
    defaults: dict[str, Any] = field(default_factory=dict)
    fixed: list[Rule] = field(default_factory=list)
    examples: dict[str, str] = field(default_factory=dict)  # class -> its first failure's own reason
    slow: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # known-slow trials (`record_slow`)
    # The target's `knobs_named_by`: a failure class it names the knob values of is a rule after one failure.
    named_by: Callable[[str], dict[str, Any]] | None = None

    def record_failure(self, number: int, config: Mapping[str, Any], reason: str) -> Rule | None:
        """Adds a failure; returns the rule of its class when one (now) exists."""
        cls = failure_class(reason)
        if cls is None:
            return None
        self.failures.setdefault(cls, []).append((number, dict(config)))
        self.examples.setdefault(cls, f"trial {number}: {reason.strip()}")
        return self.rule_for(cls)

    def record_success(self, config: Mapping[str, Any]) -> None:
        self.succeeded.append(dict(config))

    def rule_for(self, cls: str) -> Rule | None:
        """The rule of failure class `cls`: the knob values every failure of the class shared,
        reduced to the non-default ones when that reduced rule still covers no successful
        configuration (values at their defaults are rarely the cause: trial 0 ran with them;
        two failures share many of them by coincidence, which kept a rule too narrow to stop
        the third)."""
        seen = self.failures.get(cls, [])
        if len(seen) < MIN_FAILURES:
            return self.named_rule(cls)
        common = dict(seen[0][1])
        for _, config in seen[1:]:
            common = {k: v for k, v in common.items() if k in config and config[k] == v}
        suspects = {k: v for k, v in common.items() if k not in self.defaults or self.defaults[k] != v}
        trials = [n for n, _ in seen]
        if suspects and suspects != common and not any(Rule(suspects, cls).matches(ok) for ok in self.succeeded):
            common = suspects
        rule = Rule(knobs=common, reason=cls, trials=trials, example=self.examples.get(cls, ""))
        rule.enforced = bool(common) and not any(rule.matches(ok) for ok in self.succeeded)
        return rule

    def named_rule(self, cls: str) -> Rule | None:
        """The rule of a failure class whose reason names its knob values (`named_by`), from its
        first failure; None when the target names none or a failure of the class lacks them."""
        named = self.named_by(cls) if self.named_by is not None else {}
        seen = self.failures.get(cls, [])
        if not named or not seen or not all(Rule(named, cls).matches(config) for _, config in seen):
            return None
        rule = Rule(knobs=dict(named), reason=cls, trials=[n for n, _ in seen], example=self.examples.get(cls, ""))
        rule.enforced = not any(rule.matches(ok) for ok in self.succeeded)
        return rule

    def record_slow(self, number: int, config: Mapping[str, Any]) -> list[Rule]:
        """Adds a known-slow trial (batch size left out: slowness is against the defaults at the
        same batch); returns the known-slow rules that hold now."""
        self.slow.append((number, {k: v for k, v in config.items() if k != "batch_size"}))
        return self.known_slow_rules()

    def known_slow_rules(self) -> list[Rule]:
        """One rule per non-default knob value that at least MIN_FAILURES known-slow trials held
        and no trial that ran at a normal speed holds (issue 27: `cudnn_conv_algo_search=DEFAULT`
        ran 2.6-3.3x slower in 7 of 30 trials and was never turned into a rule).

        A value's rule also holds the values of the conditional knobs its trials all shared
        (knobs the defaults do not have, such as `quantization` under `precision: int8`): slow
        static-INT8 trials rule out `precision=int8, quantization=static`, not dynamic INT8. A
        rule that another rule already covers (its knobs a superset of the other's) is dropped."""
        held: dict[tuple[str, str], list[int]] = {}
        values: dict[tuple[str, str], Any] = {}
        configs = dict(self.slow)
        for number, config in self.slow:
            for knob, value in config.items():
                if knob in self.defaults and self.defaults[knob] == value:
                    continue
                key = (knob, repr(value))
                held.setdefault(key, []).append(number)
                values[key] = value
        found: list[Rule] = []
        for (knob, shown), trials in held.items():
            if len(trials) < MIN_FAILURES:
                continue
            knobs = {knob: values[(knob, shown)]}
            for other in configs[trials[0]]:
                if other in self.defaults or other in knobs:
                    continue
                if all(other in configs[n] and configs[n][other] == configs[trials[0]][other] for n in trials):
                    knobs[other] = configs[trials[0]][other]  # a conditional knob all of them held
            rule = Rule(knobs, KNOWN_SLOW_REASON, sorted(trials))
            rule.enforced = not any(rule.matches(ok) for ok in self.succeeded)
            rule.example = f"trials {', '.join(map(str, rule.trials))} ran at least twice the defaults' time per sample"
            found.append(rule)
        return [
            rule
            for rule in found
            if not any(
                other is not rule and other.knobs.items() < rule.knobs.items() for other in found
            )  # covered by a more general rule
        ]

    def rules(self) -> list[Rule]:
        found = (self.rule_for(cls) for cls in self.failures)
        return [*self.fixed, *(r for r in found if r is not None), *self.known_slow_rules()]

    def enforced(self) -> list[Rule]:
        return [r for r in self.rules() if r.enforced]

    def ruled_out(self, config: Mapping[str, Any]) -> Rule | None:
        """The enforced rule `config` falls under, or None."""
        return next((r for r in self.enforced() if r.matches(config)), None)


def rules_from_history(
    history: Iterable[tuple[int, str, dict[str, Any], str]], defaults: Mapping[str, Any] | None = None
) -> FailureRules:
    """Rebuilds the rules from (number, state, config, reason) of told trials (on resume)."""
    rules = FailureRules(defaults=dict(defaults or {}))
    for number, state, config, reason in sorted(history, key=lambda h: h[0]):
        if state == "complete":  # "slow" successes are neither failures nor counter-evidence
            rules.record_success(config)
        elif state == "known slow":
            rules.record_slow(number, config)
        elif state in ("failed", "pruned"):
            rules.record_failure(number, config, reason)
            if reason.startswith("too slow"):
                rules.record_slow(number, config)
    return rules
