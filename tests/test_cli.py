"""The command line: every --help is accurate and exits 0; usage errors exit 2; the demo finds
the seed's cycle across four hosts."""

from __future__ import annotations

import pytest

from lockfleet.cli import build_parser, main

COMMANDS = {
    "serve": ("--listen", "--data-dir", "--alertmanager", "--webhook", "--webhook-secret-file", "--blessed"),
    "push": ("FILE", "--host", "--target"),
    "alerts": ("--target", "--json", "--kind", "--lock", "--host", "--since", "--until", "--id", "--hide-suppressed"),
    "stats": ("--target", "--json"),
    "chain": ("A", "B", "--target", "--json"),
    "demo": ("--seed", "--events"),
    "dmesg": ("FILE", "--json", "--host", "--rules", "--no-normalize", "--push", "--target"),
    "proc-lockdep": ("DUMP", "--json", "--host", "--all", "--rules", "--no-normalize", "--push", "--target",
                     "--token", "--tls-ca"),
    "simulate": ("--hosts", "--rate", "--duration", "--target", "--seed", "--cycles", "--check", "--json"),
    "analyze": ("PATH", "--since", "--until", "--hosts", "--json"),
    "diff": ("OLD", "NEW", "--json"),
    "report": ("PATH", "-o"),
    "lock": ("NAME", "--target", "--json"),
    "hosts": ("--target", "--json"),
    "export": ("--output", "--target", "--json"),
    "dot": ("ID", "--output", "--radius", "--target", "--json"),
    "watch": ("--after", "--from-end", "--count", "--target", "--json"),
    "suppress": ("ID", "--reason", "--author", "--target", "--json"),
    "unsuppress": ("ID", "--target", "--json"),
    "suppressions": ("--target", "--json"),
    "trace": ("PROGRAM", "--target", "--host", "--class", "--clock"),
    "worker": ("--bus", "--partitions", "--replicas", "--lease", "--id", "--health-listen"),
    "authority": ("--bus", "--name", "--data-dir", "--listen", "--tls-cert", "--token-file", "--print"),
    "bus-archive": ("--bus", "--data-dir", "--interval"),
    "cluster-demo": ("--workdir",),
    "health": ("--target", "--timeout"),
}


def test_top_level_help_lists_every_command(lockfleet_cli):
    proc = lockfleet_cli("--help")
    assert proc.returncode == 0
    for command in COMMANDS:
        assert command in proc.stdout


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_subcommand_help_mentions_its_options(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in COMMANDS[command]:
        assert option in out, f"{command} --help does not mention {option}"
    assert "default" in out


def test_parser_knows_exactly_these_commands():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["push", "--host", "h"], ["serve"],
                                  ["alerts", "--target", "nonsense"], ["chain", "A"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_demo_finds_the_seed_cycle_across_hosts(lockfleet_cli):
    from lockfleet.demo import CYCLE, HOSTS

    proc = lockfleet_cli("demo")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "possible circular locking dependency detected" in out
    for name in (*CYCLE, *HOSTS):
        assert name in out
    assert "hosts involved: " + ", ".join(sorted(HOSTS)) in out
