"""Kept for branches written before testkit/: the agent helpers live in testkit.agent."""

from testkit.agent import AgentProcess, Answer, run_cli

__all__ = ["AgentProcess", "Answer", "run_cli"]
