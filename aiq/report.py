"""``aiq.report(step=..., loss=..., **metrics)``: progress and metrics from a command job's own
program (see consumers/command/report_helper.py, standard library only)."""

from consumers.command.report_helper import report

__all__ = ["report"]
