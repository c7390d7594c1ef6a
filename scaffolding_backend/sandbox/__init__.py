"""Isolated runs of untrusted Python programs (standard library only, no Triton):
``runner.Sandbox`` explains the isolation and its choices."""

from .runner import Isolation, KillReason, Limits, RunResult, Sandbox, SandboxUnavailable

__all__ = ["Isolation", "KillReason", "Limits", "RunResult", "Sandbox", "SandboxUnavailable"]
