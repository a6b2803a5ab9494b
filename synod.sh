#!/usr/bin/env bash
# Synod's two set-up commands for a fresh Debian 12 machine, run as root:
#
#   ./synod.sh demo [synod emulate flags]   install everything, run the cloud-edge emulation
#   ./synod.sh test [pytest args]           install everything, run the whole test suite
#
# Both install the Debian packages (apt-get), create the virtualenv .venv from
# Debian's /usr/bin/python3 with system site packages (so Debian's Mininet is
# importable), install Synod into it, and start Open vSwitch (no systemd here).
# Every step is skipped when already done, so running them again is quick.
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")"

APT_PACKAGES=(
  python3 python3-venv python3-dev gcc ca-certificates  # the virtualenv and its builds
  mininet openvswitch-switch                              # the emulated network
  iputils-ping ethtool iproute2 procps                    # ping, offloads, netns, pgrep
  spin libc6-dev                                          # Spin model check (pan.c needs libc6-dev)
  jq                                                      # the CLI's --json, as scripts read it
  qemu-system-x86 qemu-utils busybox-static               # the edge agent's microVMs (TCG)
  nix-bin                                                 # NixOS renderer checks (parse/eval, offline)
  chromium chromium-driver python3-selenium               # the web view's browser tests
  vagrant vagrant-libvirt shellcheck                      # vagrant validate, provisioning lint
)
VENV=.venv
STAMP="$VENV/.synod-installed"
OVS_CTL=/usr/share/openvswitch/scripts/ovs-ctl

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'synod.sh: error: %s\n' "$*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" -eq 0 ] || die "run as root: it installs Debian packages and starts Open vSwitch"
}

install_system_packages() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    say "Debian packages already installed"
    return
  fi
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_python_env() {
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV from /usr/bin/python3 (with Debian's site packages, for Mininet)"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
  fi
  local want
  want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
      && "$VENV/bin/python" -c 'import controller, os_ken, mininet.net' 2>/dev/null; then
    say "Python environment up to date"
    return
  fi
  say "installing Synod and its Python dependencies into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[dev]'
  echo "$want" > "$STAMP"
}

start_ovs() {
  if ovs-vsctl --timeout=5 show >/dev/null 2>&1; then
    say "Open vSwitch is running"
    return
  fi
  say "starting Open vSwitch"
  "$OVS_CTL" start --system-id=random >/dev/null 2>&1 || die "could not start Open vSwitch ($OVS_CTL start)"
  ovs-vsctl --timeout=5 show >/dev/null || die "Open vSwitch started but does not answer"
}

compile_bytecode() {
  # An installed package ships its .pyc files; an editable install has none, and where
  # PYTHONDONTWRITEBYTECODE is set (as in CI) every `synod` call would compile the project's
  # modules again (~40 ms of CPU a call; decision 0035). compileall skips what is current.
  "$VENV/bin/python" -m compileall -q controller edge_agent topologies proto >/dev/null \
    || say "warning: could not byte-compile the project (the CLI starts slower)"
}

setup() {
  need_root
  install_system_packages
  install_python_env
  compile_bytecode
  start_ovs
}

usage() {
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  demo)
    setup
    say "running: synod emulate $*"
    exec "$VENV/bin/synod" emulate "$@"
    ;;
  test)
    setup
    say "running: pytest $*"
    set +e
    "$VENV/bin/python" -m pytest "$@"
    rc=$?
    set -e
    # pytest exits 5 when it collected no test: a suite that tests nothing has failed.
    [ "$rc" -eq 5 ] && die "pytest collected no tests"
    exit "$rc"
    ;;
  -h|--help|help)
    usage
    ;;
  *)
    usage >&2
    exit 2
    ;;
esac
