"""What a playbook module imports: its declaration, its steps and the machine that runs them."""

from __future__ import annotations

from flows.kit.context import ExitCheck, SignalInfo, Step, StepAction, StepContext
from flows.kit.delivery import Delivery
from flows.kit.machine import run_namer, run_playbook
from flows.kit.records import coalesced_signals
from flows.kit.registry import Playbook

__all__ = ["Delivery", "ExitCheck", "Playbook", "SignalInfo", "Step", "StepAction",
           "StepContext", "coalesced_signals", "run_namer", "run_playbook"]
