"""The plugin contract is documented: every hook has a section with a runnable example and a test."""
from __future__ import annotations

import ast
import re
import shlex
import types
from datetime import UTC, datetime

import click
import pluggy
import pytest

from host_app import hookspecs
from plugins.mail import hookspecs as mail_hookspecs
from tests.support import ROOT

DOC = (ROOT / "docs" / "plugins.md").read_text()
# The host's contract, and the hooks the mail core adds with add_hookspecs: both documented the same way.
SPECS = {
    name: obj
    for module in (hookspecs, mail_hookspecs)
    for name, obj in vars(module).items()
    if callable(obj) and hasattr(obj, f"{hookspecs.PROJECT_NAME}_spec")
}
HOOKS = sorted(SPECS)


def _section_example(hook: str) -> str:
    match = re.search(rf"^### {hook}\n(.*?)(?=^#{{2,3}} |\Z)", DOC, re.S | re.M)
    assert match, f"docs/plugins.md has no '### {hook}' section"
    code = re.search(r"```python\n(.*?)```", match.group(1), re.S)
    assert code, f"the {hook} section has no python example"
    return code.group(1)


def test_contract_has_hooks():
    assert len(HOOKS) >= 12


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_with_docstring(hook):
    spec = SPECS[hook]
    assert spec.__doc__ and spec.__doc__.strip(), f"{hook} has no docstring"
    _section_example(hook)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_its_own_test(hook):
    names = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                names.add(node.name)
    assert any(n == f"test_hook_{hook}" or n.startswith(f"test_hook_{hook}__") for n in names), (
        f"no test named test_hook_{hook} in tests/"
    )


@pytest.mark.parametrize("hook", HOOKS)
def test_documented_example_runs(hook, crm_app_factory):
    """Load the example as a plugin module, register it, and call its hook."""
    module = types.ModuleType(f"doc_example_{hook}")
    exec(compile(_section_example(hook), f"docs/plugins.md#{hook}", "exec"), module.__dict__)
    app = crm_app_factory(plugins={"mail": "plugins.mail"})
    manager = app.extensions["plugins"]
    manager.pm.register(module, name=module.__name__)
    try:
        with app.app_context():
            from host_app.api import Event
            from host_app.extensions import db
            from host_app.models import Contact

            contact = Contact(email="doc@example.org", name="Doc", created_at=datetime.now(UTC))
            db.session.add(contact)
            db.session.commit()
            kwargs = {"app": app, "cli": click.Group("cli"), "contact": contact, "contacts": [contact],
                      "before": None, "limit": 10, "filters": {}, "event": Event("invoice_paid", "1", (contact.id,)),
                      # add_hookspecs ran on registering; the second call gets a manager of its own.
                      "pluginmanager": pluggy.PluginManager(hookspecs.PROJECT_NAME),
                      "inbox_id": 1, "run_id": 1, "status": "ok", "new_messages": 1, "removed_messages": 0,
                      "changed": ["username"], "inbox_ids": [1], "values": {"archive_mail": True},
                      "message": types.SimpleNamespace(id=1, inbox_id=1, folder_id=1, uid=1), "section": "2",
                      "query": "invoice 4711", "agent": types.SimpleNamespace(id=1, is_admin=True)}
            impls = [i for i in getattr(manager.hook, hook).get_hookimpls() if i.plugin_name == module.__name__]
            assert impls, f"the {hook} example does not implement {hook}"
            for impl in impls:
                result = impl.function(**{a: kwargs[a] for a in impl.argnames})
                assert result is None or isinstance(result, list | tuple | bytes)
    finally:
        manager.pm.unregister(name=module.__name__)


# --------------------------------------------------------------------------- the README's commands

README = (ROOT / "README.md").read_text()
MANAGE_PY_OWN = {"run", "shell", "routes"}  # added by manage.py itself, beside the app's commands


def _readme_command_lines() -> list[str]:
    """Each ``manage.py`` command of the README's shell blocks, continuation lines joined, comment dropped."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if "manage.py" in line:
                commands.append(line.split("  #")[0].split(" > ")[0].strip())
    return commands


def test_readme_commands_run_from_a_fresh_shell():
    # No virtual environment is active in a fresh shell: the README names the interpreter that has the CRM.
    commands = _readme_command_lines()
    assert len(commands) >= 20
    assert [c for c in commands if not c.startswith(".venv/bin/python manage.py ")] == []
    assert "make run PORT=8000" in README


def test_readme_commands_and_their_options_exist(app):
    ctx = click.Context(app.cli)
    for line in _readme_command_lines():
        words = shlex.split(line)[2:]  # after ".venv/bin/python manage.py"
        command = app.cli
        while isinstance(command, click.Group) and words and not words[0].startswith("-"):
            name = words.pop(0)
            found = command.get_command(ctx, name)
            if found is None and command is app.cli and name in MANAGE_PY_OWN:
                found = click.Command(name)
            assert found is not None, f"README: `{line}`: there is no command {name!r}"
            command = found
        options = {opt for param in command.params for opt in param.opts}
        for word in words:
            if word.startswith("--"):
                assert word.split("=")[0] in options, f"README: `{line}`: {command.name} has no option {word}"
