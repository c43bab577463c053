"""The alert policy: who is told what and when (pure, clock-injected, no I/O). See docs/alerting.md."""

from alerts.policy.duty import Roster, on_shift
from alerts.policy.escalation import AlertPolicy, StepReached

__all__ = ["AlertPolicy", "Roster", "StepReached", "on_shift"]
