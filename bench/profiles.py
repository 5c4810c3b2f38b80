"""Summaries of py-spy's collapsed stacks (``bench --profile DIR``): where a phase spends its time.

``python -m bench.profiles FILE [--top 30] [--focus NAME]`` prints, per function
(line numbers dropped), the share of samples in which it is on the stack
(inclusive) and at the top of the stack (self). ``--focus`` keeps only stacks
through a function (e.g. ``run_sync``) and shows shares of those.
"""
from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_SITE_PACKAGES_RE = re.compile(r"^.*?/(?:site|dist)-packages/")
_REPO_RE = re.compile(r"^.*?/work/main/")


def _frame_name(frame: str) -> str:
    match = _FRAME_RE.match(frame.strip())
    if not match:
        return frame.strip()
    path = _REPO_RE.sub("", _SITE_PACKAGES_RE.sub("", match.group("file")))
    path = re.sub(r"^.*?/lib/python3\.\d+/", "", path)
    return f"{match.group('func')} ({path})"


def read_stacks(path: Path) -> Counter:
    """``{tuple of frames (outermost first): samples}`` from a py-spy ``--format raw`` file."""
    stacks: Counter = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        stacks[tuple(_frame_name(f) for f in frames)] += int(count)
    return stacks


def summarize(stacks: Counter, focus: str | None = None, top: int = 30) -> dict:
    """Inclusive and self shares per function, optionally of the stacks through ``focus`` only."""
    if focus:
        stacks = Counter({s: n for s, n in stacks.items() if any(focus in f for f in s)})
    total = sum(stacks.values())
    inclusive: Counter = Counter()
    own: Counter = Counter()
    for stack, count in stacks.items():
        for name in set(stack):
            inclusive[name] += count
        if stack:
            own[stack[-1]] += count
    share = (lambda n: round(100 * n / total, 1)) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "inclusive": [(name, share(n)) for name, n in inclusive.most_common(top)],
        "self": [(name, share(n)) for name, n in own.most_common(top)],
    }


def format_summary(summary: dict) -> str:
    lines = [f"{summary['samples']} samples", "", "inclusive %  function"]
    lines += [f"{pct:10.1f}  {name}" for name, pct in summary["inclusive"]]
    lines += ["", "self %      function"]
    lines += [f"{pct:10.1f}  {name}" for name, pct in summary["self"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profiles", description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--focus", default=None, help="only stacks through a function whose name contains this")
    args = parser.parse_args(argv)
    print(format_summary(summarize(read_stacks(args.file), args.focus, args.top)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
