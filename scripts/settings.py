"""What `invitations serve --help` says the binary accepts: flags, env twins,
defaults, and help text. Shared by scripts/check-settings (the operator
guide's table) and scripts/check-deploy (the Kubernetes manifests).
"""

import os
import re
import subprocess
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Setting:
    flag: str
    env: str | None
    default: str | None
    required: bool
    choices: list[str]
    help: str


def binary() -> str:
    """Builds (if needed) and returns the debug binary."""
    subprocess.run(["cargo", "build", "--locked", "--quiet", "--bin", "invitations"], cwd=REPO, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    return os.path.join(target, "debug", "invitations")


def help_text(subcommand: str = "serve") -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVITATIONS_") and k != "DATABASE_URL"}
    return subprocess.run([binary(), subcommand, "--help"], cwd=REPO, env=env, check=True,
                          capture_output=True, text=True).stdout


def parse(text: str) -> list[Setting]:
    usage = next((line for line in text.splitlines() if line.startswith("Usage:")), "")
    # Required flags appear in the usage line outside the [OPTIONS] brackets.
    required = set(re.findall(r"(--[a-z0-9-]+) <", usage))
    settings, flag, lines = [], None, []

    def flush():
        if flag and flag != "--help":
            settings.append(describe(flag, " ".join(lines), flag in required))

    for line in text.splitlines():
        m = re.match(r"^\s+(?:-\w, )?(--[a-z0-9-]+)(?: <[A-Z_]+>)?\s*(.*)$", line)
        if m:
            flush()
            flag, lines = m.group(1), [m.group(2)] if m.group(2) else []
        elif flag and line.strip():
            lines.append(line.strip())
    flush()
    return settings


def describe(flag: str, text: str, required: bool) -> Setting:
    def bracket(name):
        m = re.search(r"\[" + name + r": ([^\]]*)\]", text)
        return m.group(1) if m else None

    env = bracket("env")
    if env is not None:
        env = env.split("=", 1)[0]
    choices = bracket("possible values")
    help_ = re.split(r" \[(?:env|default|possible values): ", text, maxsplit=1)[0].strip()
    return Setting(flag, env, bracket("default"), required, choices.split(", ") if choices else [], help_)


def accepted_env(settings: list[Setting]) -> set[str]:
    return {s.env for s in settings if s.env}
