"""The grpcurl examples of a markdown document, for scripts/doc_examples.py:
finds them (```sh blocks and inline spans), reads the `<!-- doc-example -->`
directives before them and the answers documented under them (`# → {…}`),
and compares a documented answer with a real one.
"""

import json
import os
import re
import shlex

TARGET = re.compile(r"^(localhost|invitations|<pod>):50051$")


class ExampleError(Exception):
    pass


class Example:
    def __init__(self, doc, line, argv, directives):
        self.doc, self.line, self.argv, self.directives = doc, line, argv, directives
        self.answer = None  # documented answer text, if any

    def where(self):
        return f"{os.path.relpath(self.doc)}:{self.line}"


def parse_directives(text):
    out = {"bind": {}, "setup": [], "serve": None, "skip": None}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        if sep and key in ("setup", "serve", "skip"):
            value = value.strip()
            if key == "setup":
                out["setup"].append(value)
            else:
                out[key] = value
            continue
        name, sep, ref = line.partition(" = ")
        if not sep:
            raise SystemExit(f"doc-example directive not understood: {line!r}")
        out["bind"][name.strip()] = ref.strip()
    return out


def split_commands(lines):
    """(line number, argv, answer lines) for each command of a shell block."""
    commands, i = [], 0
    while i < len(lines):
        number, text = lines[i]
        stripped = text.strip()
        if stripped.startswith("# →"):
            answer = [stripped[len("# →"):]]
            i += 1
            while i < len(lines) and lines[i][1].strip().startswith("#") and not lines[i][1].strip().startswith("# →") \
                    and lines[i][1].startswith("#  "):
                answer.append(lines[i][1].strip()[1:])
                i += 1
            if commands:
                commands[-1][2].extend(answer)
            continue
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        buf = text
        while True:
            try:
                words = shlex.split(buf, comments=True)
                if buf.rstrip().endswith("\\"):
                    raise ValueError("continued")
                break
            except ValueError:
                i += 1
                if i >= len(lines):
                    raise SystemExit(f"unterminated command at line {number}: {buf!r}")
                buf = buf.rstrip()
                buf = (buf[:-1] if buf.endswith("\\") else buf + "\n") + lines[i][1]
        commands.append((number, words, []))
        i += 1
    return commands


def extract(doc):
    examples, fragments = [], []
    with open(doc, encoding="utf-8") as f:
        lines = f.read().split("\n")
    pending = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("<!-- doc-example"):
            body = [line.strip()[len("<!-- doc-example"):]]
            while "-->" not in body[-1]:
                i += 1
                body.append(lines[i])
            body[-1] = body[-1].split("-->")[0]
            pending = parse_directives("\n".join(body))
            i += 1
            continue
        fence = re.match(r"^\s*```(\w*)", line)
        if fence:
            lang, block = fence.group(1), []
            i += 1
            while i < len(lines) and not re.match(r"^\s*```", lines[i]):
                block.append((i + 1, lines[i]))
                i += 1
            i += 1
            if lang in ("sh", "bash", "shell"):
                found = False
                for number, words, answer in split_commands(block):
                    if words and words[0] == "grpcurl":
                        ex = Example(doc, number, words, pending or parse_directives(""))
                        if answer:
                            ex.answer = " ".join(answer)
                        examples.append(ex)
                        found = True
                if found:
                    pending = None
            continue
        if line.strip() and not line.strip().startswith("<!--"):
            # A paragraph: inline `grpcurl …` spans, which may wrap lines.
            start, para = i + 1, []
            while i < len(lines) and lines[i].strip() and not re.match(r"^\s*```", lines[i]) \
                    and not lines[i].strip().startswith("<!--"):
                para.append(lines[i].strip())
                i += 1
            text = " ".join(para)
            found = False
            for m in re.finditer(r"`([^`]+)`", text):
                span = m.group(1)
                if not span.startswith("grpcurl "):
                    continue
                line_number = start + sum(1 for n in range(len(para)) if len(" ".join(para[:n + 1])) < m.start())
                try:
                    words = shlex.split(span)
                except ValueError:
                    words = []
                if any(TARGET.match(w) for w in words):
                    examples.append(Example(doc, line_number, words, pending or parse_directives("")))
                    found = True
                else:
                    fragments.append(f"{os.path.relpath(doc)}:{line_number}: `{span}`")
            if found:
                pending = None
            continue
        i += 1
    return examples, fragments


def documented_answer(text):
    """The documented answer as JSON, its elisions (…) removed."""
    parts = re.split(r'("(?:[^"\\]|\\.)*")', text.strip())
    for k in range(0, len(parts), 2):
        seg = parts[k]
        seg = re.sub(r"\[\s*…[^\]\"]*\]", "[]", seg)
        seg = re.sub(r",\s*…", "", seg)
        seg = re.sub(r"…\s*,?", "", seg)
        parts[k] = seg
    try:
        return json.loads("".join(parts))
    except json.JSONDecodeError as e:
        raise ExampleError(f"the documented answer is not JSON once elided ({e}): {text}")


def kind(value):
    return type(value).__name__ if value is not None else "null"


def compare(doc, real, path="answer"):
    """Every key the documented answer names is in the real one, with the same JSON type."""
    problems = []
    if isinstance(doc, dict):
        if not isinstance(real, dict):
            return [f"{path}: documented an object, got {kind(real)}"]
        for key, value in doc.items():
            if key not in real:
                problems.append(f"{path}.{key}: documented, missing from the real answer (keys: {sorted(real)})")
            else:
                problems += compare(value, real[key], f"{path}.{key}")
    elif isinstance(doc, list):
        if not isinstance(real, list):
            return [f"{path}: documented a list, got {kind(real)}"]
        if doc and real:  # an empty real list has no elements to compare
            for n, element in enumerate(doc):
                problems += compare(element, real[min(n, len(real) - 1)], f"{path}[{n}]")
    elif doc == "…" or real is None:
        pass  # "…": any value; null: a message field unset in this run
    elif kind(doc) != kind(real) and not (isinstance(doc, (int, float)) and isinstance(real, (int, float))):
        problems.append(f"{path}: documented {kind(doc)} {doc!r}, got {kind(real)} {real!r}")
    return problems


def self_test():
    """The checks can fail: a renamed key, a changed type and a vanished
    example are caught, and elisions parse (run before the examples)."""
    doc = documented_answer('{"member": {"userId": "omid", …}, "movedCount": "4", "ancestors": [{"userId": "ayo"}, …],'
                            ' "items": [… the first 1,000 …], "nextPageToken": "…"}')
    assert doc == {"member": {"userId": "omid"}, "movedCount": "4", "ancestors": [{"userId": "ayo"}], "items": [],
                   "nextPageToken": "…"}, doc
    real = {"member": {"userId": "x", "depth": 1}, "movedCount": "1", "ancestors": [{"userId": "y"}], "items": [],
            "nextPageToken": ""}
    assert compare(doc, real) == []
    assert compare(doc, {**real, "member": {"user": "x"}}), "a renamed key passed"
    assert compare(doc, {**real, "movedCount": 1}), "a string that became a number passed"
    block = [(1, "grpcurl -plaintext -d '{"), (2, '  "a": 1'), (3, "}' localhost:50051 x.Y/Z"), (4, '# → {"b": 2,'),
             (5, '#    "c": 3}'), (6, "# a comment"), (7, "curl -s x  # not grpcurl")]
    commands = split_commands(block)
    assert [(n, w[0]) for n, w, _ in commands] == [(1, "grpcurl"), (7, "curl")], commands
    assert commands[0][1][3] == '{\n  "a": 1\n}' and documented_answer(" ".join(commands[0][2])) == {"b": 2, "c": 3}
