#!/usr/bin/env python3
"""Runs every grpcurl example of README.md and docs/operations.md against the
real service and checks each documented answer's shape. Run by
scripts/doc-examples (which installs grpcurl and builds the binary).

What counts as an example: every `grpcurl` command in a ```sh block, and every
inline `grpcurl … :50051 …` in the prose. Each document runs top to bottom on
a fresh database, as a reader following it would. The host (localhost,
invitations, <pod>) becomes the service started for the call's kind:
`-plaintext` without a token: a development server without credentials;
`-plaintext` with `authorization: Bearer $OPS_TOKEN` (or $TOKEN): one with
caller tokens; no `-plaintext`: one with TLS and client certificates (the
files named, ca.crt, signup.crt, client.crt, …, are made for it).

An example fails the run when grpcurl fails, or when a `# → {…}` answer
documented under it names a key the real answer lacks at that place, or whose
JSON type differs (`…` elides: `[…]`, `"…"`, a trailing `, …`).

Placeholders. A `code` value is never a real code (codes depend on the
secret), so it is always filled: by default with the first invitation of the
latest earlier Mint answer, in the case written. Strings with `…` are filled
by field: reservation_id from the latest Reserve, invitation ids from the
latest Mint. An HTML comment before an example (a ```sh block or a paragraph)
says more, one directive a line:

    <!-- doc-example
    K7QM-X2RT-9WZB-HA4C = Mint(label=launch).invitations[0].code
    setup: Redeem {"code": "{Mint(label=wave-1).invitations[inviterId=ayo].code}", "invitee_id": "omid"}
    serve: --earn-interval 7d --earn-cap 3
    skip: why it cannot run here
    -->

`TEXT = REF` fills that placeholder, in any case (REF: the latest earlier call of that RPC,
optionally whose request has field=value, then a path into its answer, where
[k=v] picks the first list element with k equal to v); `setup:` calls an RPC
before the example (its JSON may hold {REF}); `serve:` runs the example
against a service started with these extra flags; `skip:` lists it as skipped
with the reason.

DOC_EXAMPLES_VERBOSE=1 prints each call's answer.
"""

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from doc_markdown import TARGET, ExampleError, compare, documented_answer, extract, self_test  # noqa: E402

DOCS = ["README.md", "docs/operations.md"]
SERVICE = "invitations.v1.InvitationService"
# Server-streaming calls that never end by themselves: the first message is the answer.
ENDLESS = {"grpc.health.v1.Health/Watch"}
CALL_TIMEOUT_S = 20


# ------------------------------------------------------------ references


class History:
    def __init__(self):
        self.calls = []  # (rpc, request, answer)

    def add(self, rpc, request, answer):
        self.calls.append((rpc, request, answer))

    def resolve(self, ref):
        m = re.match(r"^(\w+)(?:\(([^)]*)\))?(.*)$", ref)
        if not m:
            raise ExampleError(f"reference not understood: {ref}")
        rpc, filters, path = m.group(1), m.group(2), m.group(3)
        wanted = {}
        for f in filter(None, (s.strip() for s in (filters or "").split(","))):
            k, _, v = f.partition("=")
            wanted[k.strip()] = v.strip()
        for name, request, answer in reversed(self.calls):
            if name != rpc or any(str(request.get(k)) != v for k, v in wanted.items()):
                continue
            value = follow(answer, path)
            if value is not None:
                return value
        raise ExampleError(f"no earlier {rpc} answer has {ref}")


def follow(value, path):
    for step in re.findall(r"\.\w+|\[[^\]]+\]", path):
        if step.startswith("."):
            value = value.get(step[1:]) if isinstance(value, dict) else None
        elif "=" in step:
            k, _, v = step[1:-1].partition("=")
            value = next((e for e in value if isinstance(e, dict) and str(e.get(k)) == v), None) \
                if isinstance(value, list) else None
        else:
            n = int(step[1:-1])
            value = value[n] if isinstance(value, list) and len(value) > n else None
        if value is None:
            return None
    return value


DEFAULTS = {
    "code": "Mint.invitations[0].code",
    "reservation_id": "Reserve.reservation.id",
    "invitation_ids": "Mint.invitations[0].id",
    "invitation_id": "Mint.invitations[0].id",
}


def fill(request, binds, history):
    def one(field, value):
        if not isinstance(value, str):
            return value
        bound = next((ref for text, ref in binds.items() if text.lower() == value.lower()), None)
        if bound:
            real = history.resolve(bound)
        elif field == "code" or "…" in value:
            if field not in DEFAULTS:
                raise ExampleError(f"no value for the placeholder {value!r} in {field}: bind it with <!-- doc-example {value} = REF -->")
            real = history.resolve(DEFAULTS[field])
        else:
            return value
        return real.lower() if field == "code" and value.islower() else real

    out = {}
    for field, value in request.items():
        if isinstance(value, list):
            out[field] = [one(field, v) for v in value]
        else:
            out[field] = one(field, value)
    return out


# -------------------------------------------------------------- services


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Services:
    """The services a document's examples call, all on the document's database."""

    started = 0

    def __init__(self, binary, database_url, certs, tokens, logdir):
        self.binary, self.database_url, self.certs, self.tokens, self.logdir = binary, database_url, certs, tokens, logdir
        self.running = {}

    def address(self, kind, extra=()):
        key = (kind, tuple(extra))
        if key not in self.running:
            self.running[key] = self.start(kind, list(extra))
        return self.running[key][1]

    def start(self, kind, extra):
        port = free_port()
        args = [self.binary, "serve", "--listen", f"127.0.0.1:{port}", "--admin-listen", "127.0.0.1:0",
                "--database-url", self.database_url]
        if "--nats-url" not in extra:
            args += ["--nats-url", ""]
        tokens = ",".join(f"{name}:{scope}:{sha}" for name, scope, _, sha in self.tokens)
        if kind == "auth":
            args += ["--caller-tokens", tokens]
        elif kind == "tls":
            c = self.certs
            args += ["--tls-cert", f"{c}/server.crt", "--tls-key", f"{c}/server.key", "--tls-client-ca", f"{c}/ca.crt",
                     "--client-identities",
                     "signup.internal:signup, spiffe://cluster.local/ns/web/sa/signup:signup, ops.internal:admin",
                     "--caller-tokens", tokens]
        args += extra
        Services.started += 1
        log = open(os.path.join(self.logdir, f"service-{Services.started}-{kind}.log"), "w")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "INVITATIONS_LOG": "warn"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the {kind} service exited at start; its log: {log.name}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise SystemExit(f"the {kind} service did not listen within 30 s; its log: {log.name}")
        return proc, f"127.0.0.1:{port}"

    def stop(self):
        for proc, _ in self.running.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _ in self.running.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.running = {}


def make_certs(d):
    """A CA, a server certificate for localhost and 127.0.0.1, and the client
    certificates the TLS examples name."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
        "-out", "ca.crt", "-days", "2", "-subj", "/CN=doc-examples CA")
    for name, san in [("server", "DNS:localhost,DNS:invitations,IP:127.0.0.1"), ("signup", "DNS:signup.internal"),
                      ("client", "URI:spiffe://cluster.local/ns/web/sa/signup")]:
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={name}")
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(f"subjectAltName={san}\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    for alias in ("clients-ca.crt",):
        with open(os.path.join(d, "ca.crt")) as src, open(os.path.join(d, alias), "w") as dst:
            dst.write(src.read())


# -------------------------------------------------------------- running


def parse_answers(out):
    answers, decoder, text = [], json.JSONDecoder(), out.strip()
    while text:
        value, end = decoder.raw_decode(text)
        answers.append(value)
        text = text[end:].strip()
    return answers


def run_grpcurl(argv, env, cwd, endless):
    if not endless:
        p = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=CALL_TIMEOUT_S)
        return p.returncode, p.stdout, p.stderr
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    lines, deadline = [], time.monotonic() + CALL_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            lines.append(line)
            try:
                parse_answers("".join(lines))
                return 0, "".join(lines), ""
            except json.JSONDecodeError:
                continue
        return 1, "".join(lines), "no first message from the stream"
    finally:
        p.kill()
        p.wait()


def run_example(ex, services, history, env, certs):
    binds = ex.directives["bind"]
    extra = shlex.split(ex.directives["serve"]) if ex.directives["serve"] else []
    plaintext = "-plaintext" in ex.argv
    with_token = any(a.lower().startswith("authorization:") for a in ex.argv)
    kind = "plain" if plaintext and not with_token else "auth" if plaintext else "tls"
    if extra:
        kind = "plain"
    address = services.address(kind, extra)

    for setup in ex.directives["setup"]:
        rpc, _, body = setup.partition(" ")
        body = re.sub(r"\{([A-Z]\w*(?:\([^)]*\))?[^}\"]*)\}", lambda m: history.resolve(m.group(1)), body)
        request = json.loads(body)
        argv = ["grpcurl", "-plaintext", "-d", json.dumps(request), services.address("plain"), f"{SERVICE}/{rpc}"]
        rc, out, err = run_grpcurl(argv, env, certs, False)
        if rc != 0:
            raise ExampleError(f"setup {setup} failed: {err.strip()}")
        history.add(rpc, request, parse_answers(out)[0] if out.strip() else {})

    argv, request, method = [], None, None
    words = list(ex.argv)
    k = 0
    while k < len(words):
        w = words[k]
        if w == "-d" and k + 1 < len(words):
            try:
                request = fill(json.loads(words[k + 1]), binds, history)
            except json.JSONDecodeError as e:
                raise ExampleError(f"the -d JSON does not parse: {e}")
            argv += ["-d", json.dumps(request)]
            k += 2
            continue
        if TARGET.match(w):
            argv.append(address)
        else:
            argv.append(re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), m.group(0)), w))
        k += 1
    positional = [a for a in argv[1:] if not a.startswith("-")]
    method = next((a for a in positional if re.match(r"^[\w.]+/\w+$", a)), None)
    if method:
        # Zero values too, so a documented key is checked even when this
        # run's value is zero (a count, a flag, an empty list).
        argv.insert(1, "-emit-defaults")
    rc, out, err = run_grpcurl(argv, env, certs, method in ENDLESS)
    # With -format-error a refusal is the example's answer: the status as
    # JSON on stderr, compared with the documented one like any answer.
    if rc != 0 and "-format-error" in argv and err.strip().startswith("{"):
        rc, out = 0, err
    if rc != 0:
        raise ExampleError(f"grpcurl failed (exit {rc}):\n    {' '.join(shlex.quote(a) for a in argv)}\n    "
                           + err.strip().replace("\n", "\n    "))
    if method is None:
        # list / describe: plain text naming what was asked for.
        symbol = positional[-1] if positional and positional[-1] not in ("list", "describe") else SERVICE
        if symbol not in out:
            raise ExampleError(f"the output does not mention {symbol}:\n{out}")
        return
    answers = parse_answers(out) if out.strip() else [{}]
    if os.environ.get("DOC_EXAMPLES_VERBOSE"):
        print(f"{ex.where()} {method}: {json.dumps(answers[0])[:300]}")
    if method.startswith(SERVICE + "/"):
        history.add(method.split("/")[1], request or {}, answers[0])
    if ex.answer:
        problems = compare(documented_answer(ex.answer), answers[0])
        if problems:
            raise ExampleError("the documented answer does not match the real one:\n    " + "\n    ".join(problems)
                               + f"\n    real answer: {json.dumps(answers[0])[:2000]}")


def main():
    binary, database_base, = sys.argv[1], sys.argv[2]
    self_test()
    root = os.getcwd()
    work = tempfile.mkdtemp(prefix="doc-examples-")
    certs = os.path.join(work, "certs")
    os.mkdir(certs)
    make_certs(certs)
    tokens = []
    for name, scope, var in [("ops", "admin", "OPS_TOKEN"), ("signup-svc", "signup", "TOKEN")]:
        out = subprocess.run([binary, "hash-token", "--generate"], capture_output=True, text=True, check=True).stdout
        token = re.search(r"token:\s*(\S+)", out).group(1)
        sha = re.search(r"sha256:\s*([0-9a-f]{64})", out).group(1)
        tokens.append((name, scope, var, sha))
        os.environ[var] = token
    env = {**os.environ, "SSL_CERT_FILE": os.path.join(certs, "ca.crt")}

    failures, skipped, ran = [], [], 0
    for doc in DOCS:
        examples, fragments = extract(os.path.join(root, doc))
        for f in fragments:
            skipped.append(f"{f} (a flag named in prose, not a call)")
        db = f"docex_{os.getpid()}_{DOCS.index(doc)}"
        subprocess.run(["psql", f"{database_base}/postgres", "-qc", f"CREATE DATABASE {db}"], check=True, capture_output=True)
        services = Services(binary, f"{database_base}/{db}", certs, tokens, work)
        history = History()
        try:
            for ex in examples:
                if ex.directives["skip"]:
                    skipped.append(f"{ex.where()} ({ex.directives['skip']})")
                    continue
                ran += 1
                try:
                    run_example(ex, services, history, env, certs)
                except (ExampleError, subprocess.TimeoutExpired) as e:
                    failures.append(f"{ex.where()}: {e}")
        finally:
            services.stop()
            subprocess.run(["psql", f"{database_base}/postgres", "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"],
                           capture_output=True)
    for s in skipped:
        print(f"doc-examples: skipped {s}")
    for f in failures:
        print(f"doc-examples: FAILED {f}", file=sys.stderr)
    if failures:
        print(f"doc-examples: the services' logs are in {work}")
    print(f"doc-examples: {ran - len(failures)} passed, {len(failures)} failed, {len(skipped)} skipped")
    if not failures:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
