"""Where the `synod` client's connection settings come from: flag, variable, file, default.

Each setting is taken from the first place that has it, the etcdctl/kubectl habit:

1. its flag, before or after the subcommand (`synod --server A status`, `synod status
   --server A`; after wins);
2. its environment variable (`SYNOD_SERVER`, `SYNOD_TOKEN`, `SYNOD_CA`, `SYNOD_INSECURE`,
   `SYNOD_TIMEOUT`);
3. the client config file: `$SYNOD_CONFIG` if set (it must then exist), else
   `$XDG_CONFIG_HOME/synod/client.toml` (`~/.config/synod/client.toml`) if it exists;
4. the default, which matches a node's default `api.listen` (127.0.0.1:7000).

The file is TOML with the keys below; unknown keys are refused with their name, and
relative paths are read from the file's directory (so `synod init` can write one beside
the CA and the admin token). Every setting remembers where it came from, so an error can
name the flag or variable to fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import NodeBaseError

__all__ = [
    "DEFAULT_SERVER",
    "ENV",
    "FLAGS",
    "ClientConfigError",
    "ClientSettings",
    "config_path",
    "resolve",
]

DEFAULT_SERVER = "127.0.0.1:7000"  # a node's default api.listen (controller/node/config.py)
FLAGS = {"server": "--server", "token": "--token", "ca": "--ca", "insecure": "--insecure",
         "timeout_s": "--timeout"}
ENV = {"server": "SYNOD_SERVER", "token": "SYNOD_TOKEN", "ca": "SYNOD_CA",
       "insecure": "SYNOD_INSECURE", "timeout_s": "SYNOD_TIMEOUT"}
_FILE_KEYS: dict[str, type] = {"server": str, "token": str, "ca": str, "insecure": bool,
                               "timeout_s": float}
_PATHS = ("ca", "token")  # relative to the file's directory (the token only as @FILE)
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class ClientConfigError(NodeBaseError):
    """A client setting that cannot be used; the message names the file, key or variable."""


@dataclass(frozen=True)
class ClientSettings:
    """Resolved settings; `origin[name]` says where each came from (a flag, a variable,
    the file's path, or "default"), for error messages."""

    server: str = DEFAULT_SERVER
    token: str = ""  # the token itself (read from @FILE already)
    ca: str = ""  # CA certificate file; "" = the system's roots
    insecure: bool = False
    timeout_s: float = 10.0
    origin: Mapping[str, str] = field(default_factory=dict)

    def source(self, name: str) -> str:
        return self.origin.get(name, "default")


def config_path(env: Mapping[str, str]) -> tuple[Path, bool]:
    """The client config file and whether it was named explicitly ($SYNOD_CONFIG)."""
    named = env.get("SYNOD_CONFIG", "")
    if named:
        return Path(named).expanduser(), True
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")) / ".config")
    return Path(base).expanduser() / "synod" / "client.toml", False


def _read_file(path: Path, explicit: bool) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        if explicit:
            raise ClientConfigError(f"{path} (SYNOD_CONFIG): no such file") from None
        return {}
    except OSError as exc:
        raise ClientConfigError(f"{path}: cannot read: {exc.strerror}") from None
    import tomllib

    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ClientConfigError(f"{path}: not valid TOML: {exc}") from None
    out: dict[str, Any] = {}
    value: Any
    for key, value in raw.items():
        kind = _FILE_KEYS.get(key)
        if kind is None:
            raise ClientConfigError(
                f"{path}: {key}: unknown key (known: {', '.join(sorted(_FILE_KEYS))})")
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        fits = isinstance(value, kind)
        if not fits or (kind is float and value <= 0):
            raise ClientConfigError(f"{path}: {key}: expected {_KIND_NAMES[kind]}, "
                                    f"got {value!r}")
        if key in _PATHS and value:
            at = "@" if key == "token" and value.startswith("@") else ""
            if key == "ca" or at:
                rel = Path(value[len(at):]).expanduser()
                value = at + str(rel if rel.is_absolute() else path.parent / rel)
        out[key] = value
    return out


_KIND_NAMES = {str: "a string", bool: "true or false", float: "a positive number"}


def _from_env(name: str, text: str) -> Any:
    var = ENV[name]
    if name == "insecure":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ClientConfigError(f"{var}={text!r}: expected 1/true or 0/false")
    if name == "timeout_s":
        try:
            value = float(text)
        except ValueError:
            value = 0.0
        if value <= 0:
            raise ClientConfigError(f"{var}={text!r}: expected a positive number of seconds")
        return value
    return text


def _read_token(value: str, origin: str) -> str:
    """A token given as @FILE is read from FILE (first line, stripped)."""
    if not value.startswith("@"):
        return value
    try:
        return Path(value[1:]).expanduser().read_text().strip()
    except OSError as exc:
        raise ClientConfigError(f"{value[1:]} (token from {origin}): {exc.strerror}") from None


def resolve(flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> ClientSettings:
    """Settings from flags (None: not given), then env, then the config file, then defaults."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name in FLAGS:
        if flags.get(name) is not None:
            values[name], origin[name] = flags[name], FLAGS[name]
        elif env.get(ENV[name]):
            values[name], origin[name] = _from_env(name, env[ENV[name]]), ENV[name]
    if len(values) < len(FLAGS):
        path, explicit = config_path(env)
        for name, value in _read_file(path, explicit).items():
            if name not in values:
                values[name], origin[name] = value, str(path)
    if "token" in values:
        values["token"] = _read_token(values["token"], origin["token"])
    if "ca" in values:
        values["ca"] = str(Path(values["ca"]).expanduser()) if values["ca"] else ""
    return ClientSettings(**values, origin=origin)
