"""Developer tasks: `nox -s tests`, `nox -s lint`, `nox -s bench`, `nox -s demo`, `nox -s fuzz`."""

from __future__ import annotations

import shutil

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

_APT_HINT = "install it with: apt-get install -y {package}"


def _require(session: nox.Session, program: str, package: str) -> None:
    if shutil.which(program) is None:
        session.error(f"`{program}` is not installed; {_APT_HINT.format(package=package)}")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite, against real memcached processes."""
    _require(session, "memcached", "memcached")
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) and mypy --strict."""
    session.install("-e", ".[test,lint]", "nox")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


@nox.session
def fuzz(session: nox.Session) -> None:
    """A million generated and mutated requests through the parser, replies through the
    framer, then a minute of hostile clients beside checking ones on a live proxy.

    Not a default session: it takes minutes. `nox -s fuzz -- --seed N` replays a run;
    see `python tests/fuzzing.py --help` for the sizes.
    """
    _require(session, "memcached", "memcached")
    session.install("-e", ".[test]")
    session.run("python", "tests/fuzzing.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """memcached direct vs twemproxy vs mcrouter-trio under the same memaslap load."""
    _require(session, "memcaslap", "libmemcached-tools")
    _require(session, "nutcracker", "nutcracker")
    session.install("-e", ".")
    session.run("python", "bench/run_bench.py", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Local memcached instances behind mcrouter-trio on an example config."""
    _require(session, "memcached", "memcached")
    session.install("-e", ".")
    session.run("python", "examples/demo.py", *session.posargs)
