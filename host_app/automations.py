"""Automations pages: the rule builder (each condition and action shows its own form) and the run log."""
from __future__ import annotations

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from . import bulk_runs
from .auth import admin_required
from .automation_engine import actions, conditions
from .events import event_types
from .extensions import db
from .models import AutomationBulkRun, AutomationRule, AutomationRun
from .schedules import parse_daily_at
from .triggers import DAILY, MANUAL, SCHEDULED
from .waits import cancel_waits, duration

bp = Blueprint("automations", __name__, url_prefix="/automations")


WAIT_UNITS = ((60, "minutes"), (3600, "hours"), (86400, "days"))
MAX_WAIT_SECONDS = 366 * 86400


class RuleForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    trigger = SelectField("When", validators=[DataRequired()])
    match = SelectField(
        "Match",
        choices=[SelectChoice("all", "all must hold (AND)"), SelectChoice("any", "any may hold (OR)")],
    )
    daily_at = StringField("At (HH:MM)", description="For “Every day at…”: the time of day, 24-hour, in the "
                           "instance's time zone.", validators=[Length(max=5)])
    wait_amount = IntegerField(
        "Wait", description="After the event, wait this long before checking the conditions (empty: check at once).",
        validators=[Optional(), NumberRange(min=0, max=100000, message="Enter a number from 0 to %(max)s.")],
    )
    wait_unit = SelectField("Unit", choices=[SelectChoice(str(s), label) for s, label in WAIT_UNITS], default="86400")
    enabled = BooleanField("Enabled", default=True)


class RunNowForm(FlaskForm):
    audience = SelectField("Contacts", validators=[DataRequired()], default="all:")


class Part:
    """One condition or action row of the builder: its key, the plugin object and its bound form."""

    def __init__(self, key, impl, form):
        self.key, self.impl, self.form = key, impl, form


def _parts(kind: str, saved: list[dict], available: dict, formdata) -> list[Part]:
    """Build the rows of the builder, from the posted form or from the saved rule."""
    prefix = "cond" if kind == "conditions" else "act"
    if formdata is not None:
        keys = []
        i = 0
        while f"{prefix}-{i}-key" in formdata:
            keys.append(formdata[f"{prefix}-{i}-key"])
            i += 1
        saved = [{"key": k, "params": None} for k in keys]
    parts = []
    for i, item in enumerate(saved):
        impl = available.get(item["key"])
        form = None
        if impl is not None:
            form = impl.form_class(formdata=formdata, prefix=f"{prefix}-{i}-", data=item.get("params") or {})
        parts.append(Part(item["key"], impl, form))
    return parts


@bp.route("/")
@admin_required
def rule_list():
    rules = db.session.scalars(db.select(AutomationRule).order_by(AutomationRule.name)).all()
    return render_template(
        "automations/list.html",
        rules=rules,
        event_types=event_types(),
        summaries={rule.id: summarize(rule) for rule in rules},
        form=FlaskForm(),
        runnable=bulk_runs.RUNNABLE_TRIGGERS,
        wait_words=duration,
    )


def summarize(rule: AutomationRule) -> dict[str, str]:
    """Human words for a rule's conditions and actions (labels, not keys)."""
    available_conditions, available_actions = conditions(), actions()
    parts = []
    for item in rule.conditions:
        condition = available_conditions.get(item["key"])
        parts.append(condition.describe(item.get("params") or {}) if condition else f"{item['key']} (unavailable)")
    joiner = " AND " if rule.match == "all" else " OR "
    done = []
    for item in rule.actions:
        action = available_actions.get(item["key"])
        params = ", ".join(str(v) for v in (item.get("params") or {}).values() if v not in (None, ""))
        label = action.label if action else f"{item['key']} (unavailable)"
        done.append(f"{label}: {params}" if params else label)
    return {"conditions": joiner.join(parts) or "always", "actions": "; ".join(done)}


@bp.route("/new", methods=["GET", "POST"])
@bp.route("/<int:rule_id>", methods=["GET", "POST"])
@admin_required
def rule_edit(rule_id: int | None = None):
    rule = db.get_or_404(AutomationRule, rule_id) if rule_id else None
    form = RuleForm(obj=rule)
    if rule and rule.wait_seconds and request.method == "GET":
        unit = next(size for size, _ in reversed(WAIT_UNITS) if rule.wait_seconds % size == 0)
        form.wait_amount.data, form.wait_unit.data = rule.wait_seconds // unit, str(unit)
    types = event_types()
    triggers = sorted((t for t in types.values() if t.trigger), key=lambda t: t.label)
    form.trigger.choices = [SelectChoice(t.key, t.label) for t in triggers]
    available_conditions, available_actions = conditions(), actions()
    posted = request.method == "POST"
    formdata = request.form if posted else None
    cond_parts = _parts("conditions", rule.conditions if rule else [], available_conditions, formdata)
    act_parts = _parts("actions", rule.actions if rule else [], available_actions, formdata)

    if posted:
        op = request.form.get("op", "save")
        if op == "add_condition" and request.form.get("new_condition") in available_conditions:
            cond_parts.append(_new_part(request.form["new_condition"], available_conditions, "cond", len(cond_parts)))
        elif op == "add_action" and request.form.get("new_action") in available_actions:
            act_parts.append(_new_part(request.form["new_action"], available_actions, "act", len(act_parts)))
        elif op.startswith("remove_condition_"):
            del cond_parts[_index(op, "remove_condition_", cond_parts)]
            cond_parts = _renumber(cond_parts, "cond")
        elif op.startswith("remove_action_"):
            del act_parts[_index(op, "remove_action_", act_parts)]
            act_parts = _renumber(act_parts, "act")
        elif op == "save":
            if _save(form, rule, cond_parts, act_parts):
                return redirect(url_for(".rule_list"))
        elif op not in ("add_condition", "add_action"):
            abort(400, description="The editor sent an action it does not know; reload the page and try again.")
    return render_template(
        "automations/edit.html",
        form=form,
        rule=rule,
        cond_parts=cond_parts,
        act_parts=act_parts,
        available_conditions=available_conditions,
        available_actions=available_actions,
        runnable=bulk_runs.RUNNABLE_TRIGGERS,
    )


def _index(op: str, prefix: str, parts: list) -> int:
    """The position named by ``op`` (``remove_condition_2``); 400 unless it is one of ``parts``.

    Only plain digits: int() would take "-5" (deleting from the end) or " 1".
    """
    number = op[len(prefix):]
    if not (number.isascii() and number.isdigit()) or int(number) >= len(parts):
        abort(400, description="There is no such condition or action to remove; reload the page and try again.")
    return int(number)


def _new_part(key: str, available: dict, prefix: str, index: int) -> Part:
    impl = available[key]
    return Part(key, impl, impl.form_class(prefix=f"{prefix}-{index}-"))


def _renumber(parts: list[Part], prefix: str) -> list[Part]:
    """Rebuild forms after a removal so that prefixes stay 0..n-1 and values stay filled in."""
    renumbered = []
    for i, part in enumerate(parts):
        form = part.impl.form_class(prefix=f"{prefix}-{i}-", data=part.form.data) if part.impl else None
        renumbered.append(Part(part.key, part.impl, form))
    return renumbered


def _save(form: RuleForm, rule: AutomationRule | None, cond_parts: list[Part], act_parts: list[Part]) -> bool:
    valid = form.validate_on_submit()
    for part in cond_parts + act_parts:
        if part.impl is None:
            message = f"'{part.key}' is not available (plugin disabled?); remove it."
            form.name.errors = [*form.name.errors, message]
            valid = False
        elif not part.form.validate():
            valid = False
    if not act_parts:
        flash("Add at least one action.", "error")
        valid = False
    daily_at = None
    if form.trigger.data == DAILY:
        try:
            daily_at = parse_daily_at(form.daily_at.data).strftime("%H:%M")
        except ValueError as exc:
            form.daily_at.errors = [*form.daily_at.errors, str(exc)]
            valid = False
    wait_seconds = (form.wait_amount.data or 0) * int(form.wait_unit.data or 60)
    if wait_seconds and form.trigger.data in (MANUAL, *SCHEDULED):
        form.wait_amount.errors = [*form.wait_amount.errors, "Waiting is for automations that start on an event; "
                                   "leave it empty for runs by hand or on a schedule."]
        valid = False
    elif wait_seconds > MAX_WAIT_SECONDS:
        form.wait_amount.errors = [*form.wait_amount.errors, "Wait at most 366 days."]
        valid = False
    if not valid:
        return False
    rule = rule or AutomationRule()
    if rule.id and (not form.enabled.data or not wait_seconds):
        reason = "cancelled: the automation was disabled" if not form.enabled.data else \
            "cancelled: the automation no longer waits"
        cancel_waits(rule, reason)
    rule.wait_seconds = wait_seconds
    rule.name = form.name.data
    rule.trigger = form.trigger.data
    rule.match = form.match.data
    rule.enabled = form.enabled.data
    rule.daily_at = daily_at
    rule.conditions = [{"key": p.key, "params": p.form.data} for p in cond_parts]
    rule.actions = [{"key": p.key, "params": p.form.data} for p in act_parts]
    db.session.add(rule)
    db.session.commit()
    flash(f"Automation “{rule.name}” saved.", "success")
    return True


@bp.route("/<int:rule_id>/delete", methods=["POST"])
@admin_required
def rule_delete(rule_id: int):
    if not FlaskForm().validate_on_submit():
        abort(400, "The form expired; please try again.")
    rule = db.get_or_404(AutomationRule, rule_id)
    db.session.delete(rule)
    db.session.commit()
    flash("Automation deleted.", "success")
    return redirect(url_for(".rule_list"))


@bp.route("/<int:rule_id>/run", methods=["GET", "POST"])
@admin_required
def run_now(rule_id: int):
    """Choose the contacts, see how many match, then run the actions on the worker."""
    rule = db.get_or_404(AutomationRule, rule_id)
    form = RunNowForm()
    form.audience.choices = [SelectChoice(spec, label) for spec, label in bulk_runs.audience_options()]
    preview = error = None
    try:
        bulk_runs.check_runnable(rule)
    except bulk_runs.NotRunnable as exc:
        error = str(exc)
    if error is None and form.validate_on_submit():
        try:
            if request.form.get("op") == "run":
                run = bulk_runs.start(rule, form.audience.data)
                return redirect(url_for(".bulk_run", run_id=run.id))
            preview = bulk_runs.preview(rule, form.audience.data)
        except bulk_runs.NotRunnable as exc:
            error = str(exc)
    recent = db.session.scalars(
        db.select(AutomationBulkRun).where(AutomationBulkRun.rule_id == rule.id)
        .order_by(AutomationBulkRun.id.desc()).limit(10)
    ).all()
    return render_template("automations/run_now.html", rule=rule, form=form, preview=preview, error=error,
                           summary=summarize(rule), recent=recent)


@bp.route("/bulk-runs/<int:run_id>")
@admin_required
def bulk_run(run_id: int):
    run = db.get_or_404(AutomationBulkRun, run_id)
    return render_template("automations/bulk_run.html", run=run)


@bp.route("/bulk-runs/<int:run_id>.json")
@admin_required
def bulk_run_progress(run_id: int):
    return jsonify(db.get_or_404(AutomationBulkRun, run_id).to_dict())


@bp.route("/runs")
@admin_required
def run_log():
    stmt = db.select(AutomationRun).order_by(AutomationRun.created_at.desc(), AutomationRun.id.desc())
    rule_id = request.args.get("rule", type=int)
    if rule_id:
        stmt = stmt.where(AutomationRun.rule_id == rule_id)
    bulk = db.select(AutomationBulkRun).order_by(AutomationBulkRun.id.desc()).limit(20)
    event_key = request.args.get("key", "")
    if rule_id:
        bulk = bulk.where(AutomationBulkRun.rule_id == rule_id)
    if event_key:
        stmt = stmt.where(AutomationRun.event_key == event_key)
    page = db.paginate(stmt, per_page=100, error_out=False)
    return render_template("automations/runs.html", page=page, bulk_runs=db.session.scalars(bulk).all())


def init_app(app) -> None:
    app.register_blueprint(bp)
