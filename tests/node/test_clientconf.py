"""Where the CLI's connection settings come from (controller/node/clientconf.py): a table of
flag / variable / file / default, relative paths in the file, and refusals that name the
key or variable. Also the options before and after the subcommand, through click."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from controller.cli import cli
from controller.node.clientconf import DEFAULT_SERVER, ClientConfigError, resolve

NONE = {"server": None, "token": None, "ca": None, "insecure": None, "timeout_s": None}


def _file(tmp_path, text: str):
    path = tmp_path / "client.toml"
    path.write_text(text)
    return {"SYNOD_CONFIG": str(path)}


@pytest.mark.parametrize("flag, env, file, want, origin", [
    (None, None, None, DEFAULT_SERVER, "default"),
    (None, None, "f:1", "f:1", "file"),
    (None, "e:1", "f:1", "e:1", "SYNOD_SERVER"),
    ("a:1", "e:1", "f:1", "a:1", "--server"),
])
def test_each_setting_comes_from_the_first_place_that_has_it(tmp_path, flag, env, file, want,
                                                             origin):
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "none")}
    if file:
        environ.update(_file(tmp_path, f'server = "{file}"\n'))
    if env:
        environ["SYNOD_SERVER"] = env
    s = resolve({**NONE, "server": flag}, environ)
    assert s.server == want
    assert s.source("server") == (str(tmp_path / "client.toml") if origin == "file" else origin)


def test_the_default_file_and_relative_paths(tmp_path):
    conf = tmp_path / "xdg" / "synod"
    conf.mkdir(parents=True)
    (conf / "admin.token").write_text("synod_0123456789abcdef.secret\n")
    (conf / "client.toml").write_text(
        'server = "10.0.0.1:7000"\nca = "ca.crt"\ntoken = "@admin.token"\n'
        "insecure = false\ntimeout_s = 3\n")
    s = resolve(NONE, {"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert s.server == "10.0.0.1:7000" and s.ca == str(conf / "ca.crt")
    assert s.token == "synod_0123456789abcdef.secret"  # @FILE read, relative to the file
    assert s.timeout_s == 3.0 and s.insecure is False


def test_environment_values(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path), "SYNOD_INSECURE": "1", "SYNOD_TIMEOUT": "2.5",
           "SYNOD_TOKEN": "plain-token"}
    s = resolve(NONE, env)
    assert s.insecure is True and s.timeout_s == 2.5 and s.token == "plain-token"
    assert s.source("insecure") == "SYNOD_INSECURE"


@pytest.mark.parametrize("env, text, needle", [
    ({"SYNOD_CONFIG": "/no/such/client.toml"}, None, "(SYNOD_CONFIG): no such file"),
    ({}, 'sever = "x:1"\n', "sever: unknown key (known: ca, insecure, server"),
    ({}, "insecure = 1\n", "insecure: expected true or false"),
    ({}, "timeout_s = -1\n", "timeout_s: expected a positive number"),
    ({}, "server = \n", "not valid TOML"),
    ({"SYNOD_INSECURE": "maybe"}, None, "SYNOD_INSECURE='maybe': expected 1/true or 0/false"),
    ({"SYNOD_TIMEOUT": "soon"}, None, "SYNOD_TIMEOUT='soon': expected a positive number"),
    ({"SYNOD_TOKEN": "@/no/such/token"}, None, "/no/such/token (token from SYNOD_TOKEN)"),
])
def test_refusals_name_the_file_key_or_variable(tmp_path, env, text, needle):
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "none"), **env}
    if text is not None:
        environ.update(_file(tmp_path, text))
    with pytest.raises(ClientConfigError) as e:
        resolve(NONE, environ)
    assert needle in str(e.value)


def test_options_before_or_after_the_subcommand(monkeypatch):
    """The group's options reach the command; the command's own win."""
    seen = []

    def fake_resolve(flags, env=None):
        seen.append(dict(flags))
        raise ClientConfigError("stop here")

    monkeypatch.setattr("controller.node.clientconf.resolve", fake_resolve)
    runner = CliRunner()
    r = runner.invoke(cli, ["--server", "a:1", "--timeout", "3", "status", "--server", "b:2"])
    assert "stop here" in r.output
    assert seen[-1]["server"] == "b:2" and seen[-1]["timeout_s"] == 3.0
    runner.invoke(cli, ["--token", "t", "--insecure", "members"])
    assert seen[-1]["token"] == "t" and seen[-1]["insecure"] is True
    assert seen[-1]["server"] is None  # not given: resolve takes it from env, file, default


def test_shell_completion_names_commands_and_global_options():
    """Click's completion (docs/operations.md): `eval "$(_SYNOD_COMPLETE=bash_source synod)"`."""
    import os
    import subprocess
    import sys

    def complete(words: str, cword: int) -> str:
        env = {**os.environ, "_SYNOD_COMPLETE": "bash_complete", "COMP_WORDS": words,
               "COMP_CWORD": str(cword)}
        code = "from controller.cli import main; main()"
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "plain,status" in complete("synod sta", 1)
    assert "plain,--server" in complete("synod --ser", 1)
    assert "plain,--server" in complete("synod get --ser", 2)
    source = subprocess.run([sys.executable, "-c", "from controller.cli import main; main()"],
                            env={**os.environ, "_SYNOD_COMPLETE": "bash_source"},
                            capture_output=True, text=True, timeout=60)
    assert "complete -o nosort -F _synod_completion synod" in source.stdout
