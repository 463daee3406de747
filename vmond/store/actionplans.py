"""Action plans: the ordered steps a guard works through on an account's alarm (``accounts[].action_plan``).

A plan is a list of ``{"text", "kinds"}``; a step with ``kinds`` applies only to events of those kinds, a step
without applies to every event. When an alarm is raised, the steps that apply to its event are copied onto the
alarm (``Alarm.steps``), numbered from 1, so that a later edit of the plan does not rewrite what a guard did.
Pure functions and checks; the changes themselves are in :mod:`vmond.store.alarms`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from vmond.util.kinds import KINDS

MAX_STEPS = 50
MAX_STEP_TEXT = 500


def steps_for(plan: list[dict[str, Any]] | None, kind: str | None) -> list[dict[str, Any]]:
    """The alarm's own steps from the account's *plan* for an event of *kind*.

    An event without a kind (one recorded before kinds existed) gets only the steps meant for every event."""
    chosen = [step for step in plan or [] if not step.get("kinds") or (kind is not None and kind in step["kinds"])]
    return [{"n": n, "text": step["text"], "done_by": None, "done_at": None} for n, step in enumerate(chosen, 1)]


def present_steps(steps: list[dict[str, Any]] | None, who: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps as the API shows them: ``done_by`` as ``{"id", "username"}`` (*who* maps user ids to that); a
    step a central station's operator ticked as ``{"id": None, "username": "<user> at <central>"}``."""
    def done_by(step: dict[str, Any]) -> dict[str, Any] | None:
        if step.get("done_remote"):
            return {"id": None, "username": step["done_remote"]}
        if step.get("done_by") is None:
            return None
        return who.get(step["done_by"], {"id": step["done_by"], "username": "?"})

    return [{"n": s["n"], "text": s["text"], "done_at": s.get("done_at"), "done_by": done_by(s)} for s in steps or []]


def tick(steps: list[dict[str, Any]], n: int, user_id: int | None, at: datetime, remote: str | None = None
         ) -> list[dict[str, Any]] | None:
    """The steps with step *n* done by *user_id* (or, with *remote*, by "<user> at <central>"); the same list if
    it was done already; None if there is no *n*."""
    if not any(s["n"] == n for s in steps):
        return None
    done = {"done_by": user_id, "done_at": at.isoformat()} | ({"done_remote": remote} if remote else {})
    return [dict(s, **done) if s["n"] == n and not is_done(s) else s for s in steps]


def is_done(step: dict[str, Any]) -> bool:
    return step.get("done_by") is not None or bool(step.get("done_remote"))


def check_plan(raw: Any, errors: dict[str, str]) -> list[dict[str, Any]]:
    """An action plan as the API or the account form gives it, checked; problems go into *errors* by field
    (``action_plan[2].text``)."""
    if not isinstance(raw, list):
        errors["action_plan"] = "must be a list of steps"
        return []
    if len(raw) > MAX_STEPS:
        errors["action_plan"] = f"at most {MAX_STEPS} steps"
        return []
    plan = []
    for index, item in enumerate(raw):
        where = f"action_plan[{index}]"
        if not isinstance(item, dict):
            errors[where] = "must be an object with text and kinds"
            continue
        text = item.get("text")
        if not isinstance(text, str) or not text.strip():
            errors[f"{where}.text"] = "required"
            continue
        if len(text.strip()) > MAX_STEP_TEXT:
            errors[f"{where}.text"] = f"at most {MAX_STEP_TEXT} characters"
            continue
        kinds = item.get("kinds") or []
        if isinstance(kinds, str):
            kinds = [k for k in re.split(r"[\s,]+", kinds) if k]
        if not isinstance(kinds, list) or not all(isinstance(k, str) and k.strip().lower() in KINDS
                                                  for k in kinds):
            errors[f"{where}.kinds"] = f"a list of event kinds: {', '.join(KINDS)}"
            continue
        plan.append({"text": text.strip(), "kinds": [k.strip().lower() for k in kinds]})
    return plan


def plan_as_text(plan: list[dict[str, Any]] | None) -> str:
    """The plan as the account editor shows it: one step a line, ``text | kind, kind`` for steps with kinds."""
    return "\n".join(step["text"] + (" | " + ", ".join(step["kinds"]) if step.get("kinds") else "")
                     for step in plan or [])


def plan_from_text(text: str) -> list[dict[str, Any]]:
    """The editor's lines back as a plan (empty lines skipped), for :func:`check_plan` to check."""
    plan = []
    for line in text.splitlines():
        step, _, kinds = line.partition("|")
        if step.strip() or kinds.strip():
            plan.append({"text": step.strip(), "kinds": kinds.strip()})
    return plan
