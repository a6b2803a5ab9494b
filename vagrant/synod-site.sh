#!/usr/bin/env bash
# Provisioning steps of one Synod site (a VM of vagrant/Vagrantfile, or a bare-metal host).
# Each step is callable on its own with the addresses as parameters, so the same script
# provisions the VMs and is rehearsed against network namespaces by
# tests/deploy/test_vagrant_netns.py. Every step is idempotent: run it again and it
# checks, skips what is done, and fixes nothing it did not make.
#
#   synod-site.sh check      --site S --memory-mb-min N
#   synod-site.sh install    (the README's ./synod.sh, nothing else)
#   synod-site.sh bridge     --site S --dpid HEX [--datapath system|netdev]
#                            [--underlay DEV] [--controller tcp:IP:PORT]...
#   synod-site.sh tunnel     --site S --local IP --peer SITE=IP... [--kind vxlan|gre]
#   synod-site.sh found      --site S --ip IP --controllers LIST --bootstrap DIR
#   synod-site.sh publish    --bootstrap DIR --listen IP:PORT   (needs SYNOD_SECRET)
#   synod-site.sh join       --site S --ip IP --index N --controllers LIST
#                            --cloud IP --bootstrap-url URL     (needs SYNOD_SECRET)
#   synod-site.sh start      --site S
#   synod-site.sh host       --site S --name H --ip IP/PLEN
#
# Environment: SYNOD_REPO (default: this script's repository), SYNOD_DATA_ROOT (default
# /var/lib/synod), SYNOD_BIN (default $SYNOD_REPO/.venv/bin), SYNOD_SECRET (the cluster's
# bootstrap secret; the Vagrantfile makes one per checkout), OVS_RUNDIR (OVS's own).
# An error is one line: `synod-site: SITE: step STEP: what is wrong; the fix`.
set -euo pipefail

REPO="${SYNOD_REPO:-$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)}"
DATA_ROOT="${SYNOD_DATA_ROOT:-/var/lib/synod}"
BIN="${SYNOD_BIN:-$REPO/.venv/bin}"
API_PORT=7000
PEER_PORT=7100
OF_PORT=6653
BRIDGE=br-synod
UNDERLAY_BRIDGE=br-wan
TUNNEL_KEY=5417
STEP="${1:-}"
SITE=""

die() { printf 'synod-site: %s: step %s: %s\n' "${SITE:-?}" "$STEP" "$*" >&2; exit 1; }
say() { printf 'synod-site: %s: %s\n' "${SITE:-?}" "$*" >&2; }
need() { [ -n "${!1:-}" ] || die "--${2} is required"; }

synod() { "$BIN/synod" "$@"; }

# ------------------------------------------------------------------------- steps
step_check() {
  local memory_mb_min="" memory_mb
  while [ $# -gt 0 ]; do
    case "$1" in
      --site) SITE="$2"; shift 2 ;;
      --memory-mb-min) memory_mb_min="$2"; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  need SITE site
  [ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and configures OVS)"
  memory_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
  if [ -n "$memory_mb_min" ] && [ "$memory_mb" -lt "$memory_mb_min" ]; then
    die "${memory_mb} MB of memory, at least ${memory_mb_min} MB needed; give the VM more (SYNOD_MEMORY_MB)"
  fi
  [ -x "$REPO/synod.sh" ] || die "$REPO/synod.sh not found; sync the repository to $REPO"
  say "check ok (${memory_mb} MB)"
}

step_install() {
  SITE="${SITE:-$(hostname)}"
  # The README's set-up command: Debian packages, .venv, Open vSwitch; its unit tests
  # prove the install works on this machine.
  (cd "$REPO" && ./synod.sh test -q -x tests/unit) >/dev/null \
    || die "./synod.sh test -q -x tests/unit failed; run it in $REPO to see why"
  say "installed ($REPO/.venv)"
}

step_bridge() {
  local dpid="" datapath=system underlay="" targets=() addr
  while [ $# -gt 0 ]; do
    case "$1" in
      --site) SITE="$2"; shift 2 ;;
      --dpid) dpid="$2"; shift 2 ;;
      --datapath) datapath="$2"; shift 2 ;;
      --underlay) underlay="$2"; shift 2 ;;
      --controller) targets+=("$2"); shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  need SITE site; need dpid dpid
  case "$datapath" in system|netdev) ;; *) die "--datapath $datapath: use system or netdev" ;; esac
  ovs-vsctl --timeout=10 show >/dev/null 2>&1 \
    || die "Open vSwitch does not answer; run ./synod.sh (install step) or ovs-ctl start"
  ovs-vsctl --may-exist add-br "$BRIDGE" -- set bridge "$BRIDGE" datapath_type="$datapath" \
      fail_mode=secure protocols=OpenFlow13 \
      other-config:datapath-id="$(printf '%016x' "$((16#${dpid#0x}))")" \
      other-config:dp-desc="$BRIDGE,synod-site=$SITE" \
    || die "cannot create $BRIDGE (datapath $datapath); on a machine without the OVS kernel module use --datapath netdev"
  # set-controller drops every connection: only when the targets changed
  if [ "${#targets[@]}" -gt 0 ] && [ "$(ovs-vsctl get-controller "$BRIDGE" | sort)" \
      != "$(printf '%s\n' "${targets[@]}" | sort)" ]; then
    ovs-vsctl set-controller "$BRIDGE" "${targets[@]}"
  fi
  if [ "$datapath" = netdev ]; then
    # Userspace tunnels leave through OVS's own route table (ovs-appctl ovs/route/show):
    # the underlay address must sit on an OVS bridge that has the NIC as a port.
    [ -n "$underlay" ] || die "--datapath netdev needs --underlay DEV (the WAN NIC)"
    ovs-vsctl --may-exist add-br "$UNDERLAY_BRIDGE" \
        -- set bridge "$UNDERLAY_BRIDGE" datapath_type=netdev \
        -- --may-exist add-port "$UNDERLAY_BRIDGE" "$underlay"
    ip link set "$UNDERLAY_BRIDGE" up
    for addr in $(ip -4 -o addr show dev "$underlay" | awk '{print $4}'); do
      ip addr del "$addr" dev "$underlay"
      ip addr add "$addr" dev "$UNDERLAY_BRIDGE"
    done
    # the userspace datapath forwards what the kernel left to offload: fill checksums in
    for dev in "$underlay" "$UNDERLAY_BRIDGE"; do
      ethtool -K "$dev" tx off >/dev/null 2>&1 || true
    done
  fi
  say "bridge $BRIDGE ($datapath, dpid $dpid) ready"
}

step_tunnel() {
  local local_ip="" kind=vxlan peers=() peer name ip
  while [ $# -gt 0 ]; do
    case "$1" in
      --site) SITE="$2"; shift 2 ;;
      --local) local_ip="$2"; shift 2 ;;
      --peer) peers+=("$2"); shift 2 ;;
      --kind) kind="$2"; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  need SITE site; need local_ip local
  case "$kind" in vxlan|gre) ;; *) die "--kind $kind: use vxlan or gre" ;; esac
  [ "${#peers[@]}" -gt 0 ] || die "--peer SITE=IP is required (repeat for each)"
  ovs-vsctl br-exists "$BRIDGE" || die "$BRIDGE is missing; run the bridge step first"
  for peer in "${peers[@]}"; do
    name="${peer%%=*}"; ip="${peer#*=}"
    if [ -z "$name" ] || [ "$ip" = "$peer" ]; then die "--peer $peer: expected SITE=IP"; fi
    # Port names are at most 15 characters: t-<site>.
    ovs-vsctl --may-exist add-port "$BRIDGE" "t-$name" \
        -- set interface "t-$name" type="$kind" options:remote_ip="$ip" \
           options:local_ip="$local_ip" options:key="$TUNNEL_KEY"
  done
  say "tunnels ($kind) to ${peers[*]}"
}

# The bootstrap bundle: what a joining site needs from the founder (the cluster CA to
# sign its node certificate, an admin token to ask for its admission, the controllers'
# operator token), encrypted with the cluster's bootstrap secret.
bundle_files=(ca.crt ca.key admin.token controller.token)

step_found() {
  local ip="" controllers="" bootstrap="" data config token
  while [ $# -gt 0 ]; do
    case "$1" in
      --site) SITE="$2"; shift 2 ;;
      --ip) ip="$2"; shift 2 ;;
      --controllers) controllers="$2"; shift 2 ;;
      --bootstrap) bootstrap="$2"; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  need SITE site; need ip ip; need controllers controllers; need bootstrap bootstrap
  [ -n "${SYNOD_SECRET:-}" ] || die "SYNOD_SECRET is not set (the Vagrantfile sets it)"
  data="$DATA_ROOT/$SITE"
  config="$data/site.toml"
  synod init --site "$SITE" --data "$data" --new-cluster synod --host "$ip" \
      --api "0.0.0.0:$API_PORT" --peer-listen "0.0.0.0:$PEER_PORT" \
      --advertise "$ip:$PEER_PORT" --of-listen "0.0.0.0:$OF_PORT" \
      --controllers "$controllers" --controller-index 1 >/dev/null \
    || die "synod init failed (above); fix it, or move $data away to found anew"
  start_site "$config"
  if [ ! -s "$data/controller.token" ]; then
    token=$(synod token create --role operator --description "site controllers" \
        --server "127.0.0.1:$API_PORT" --token "@$data/admin.token" --ca "$data/ca.crt") \
      || die "could not create the controllers' token at the local node"
    (umask 077; printf '%s\n' "$token" > "$data/controller.token")
  fi
  mkdir -p "$bootstrap"
  (cd "$data" && tar -cf - "${bundle_files[@]}") \
    | openssl enc -aes-256-cbc -pbkdf2 -salt -pass env:SYNOD_SECRET -out "$bootstrap/bundle.enc" \
    || die "could not write $bootstrap/bundle.enc"
  say "founded cluster 'synod' (admin token in $data/admin.token)"
}

step_publish() {
  local bootstrap="" listen="" pidfile
  while [ $# -gt 0 ]; do
    case "$1" in
      --site) SITE="$2"; shift 2 ;;
      --bootstrap) bootstrap="$2"; shift 2 ;;
      --listen) listen="$2"; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  need bootstrap bootstrap; need listen listen
  [ -s "$bootstrap/bundle.enc" ] || die "$bootstrap/bundle.enc is missing; run the found step"
  pidfile="$bootstrap/publish.pid"
  if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    say "bundle already served on $listen"
    return
  fi
  # Only the encrypted bundle is in that directory; joiners fetch it over the VM network.
  setsid python3 -m http.server --bind "${listen%:*}" --directory "$bootstrap" "${listen##*:}" \
      </dev/null >"$bootstrap/publish.log" 2>&1 &
  echo "$!" > "$pidfile"
  say "serving the encrypted bundle on $listen"
}

fetch_bundle() {  # URL DIR: download and decrypt, with a bounded wait for the founder
  local url="$1" dir="$2" tries=0
  until python3 - "$url" "$dir/bundle.enc" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as r, open(sys.argv[2], "wb") as f:
    f.write(r.read())
PY
  do
    tries=$((tries + 1))
    [ "$tries" -lt "${SYNOD_FETCH_TRIES:-60}" ] \
      || die "no bundle at $url after $tries tries; is the cloud VM up and provisioned?"
    sleep 5
  done 2>/dev/null
  openssl enc -d -aes-256-cbc -pbkdf2 -pass env:SYNOD_SECRET -in "$dir/bundle.enc" \
    | (cd "$dir" && tar -xf -) \
    || die "cannot decrypt the bundle: this checkout's SYNOD_SECRET differs from the cloud's"
}

step_join() {
  local ip="" index="" controllers="" cloud="" url="" data config tmp
  while [ $# -gt 0 ]; do
    case "$1" in
      --site) SITE="$2"; shift 2 ;;
      --ip) ip="$2"; shift 2 ;;
      --index) index="$2"; shift 2 ;;
      --controllers) controllers="$2"; shift 2 ;;
      --cloud) cloud="$2"; shift 2 ;;
      --bootstrap-url) url="$2"; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  need SITE site; need ip ip; need index index; need controllers controllers
  need cloud cloud; need url bootstrap-url
  [ -n "${SYNOD_SECRET:-}" ] || die "SYNOD_SECRET is not set (the Vagrantfile sets it)"
  data="$DATA_ROOT/$SITE"
  config="$data/site.toml"
  if [ ! -s "$data/join.cbor" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    fetch_bundle "$url" "$tmp"
    synod init --site "$SITE" --data "$data" --ca-cert "$tmp/ca.crt" --ca-key "$tmp/ca.key" \
        --host "$ip" --api "0.0.0.0:$API_PORT" --peer-listen "0.0.0.0:$PEER_PORT" \
        --advertise "$ip:$PEER_PORT" --of-listen "0.0.0.0:$OF_PORT" \
        --controllers "$controllers" --controller-index "$index" >/dev/null \
      || die "synod init failed (above)"
    install -m 600 "$tmp/controller.token" "$data/controller.token"
    install -m 600 "$tmp/admin.token" "$data/admin.token"
    synod join --data "$data" --via "$cloud:$API_PORT" --token "@$data/admin.token" \
        --advertise "$ip:$PEER_PORT" --timeout 30 >/dev/null \
      || die "synod join via $cloud:$API_PORT failed (above); check the cloud site runs (synod status there) and that $ip:$PEER_PORT is reachable from it, then provision again"
  fi
  start_site "$config"
  say "joined via $cloud"
}

start_site() {  # CONFIG: systemd's synod-up unit where systemd runs, else synod up --detach
  local config="$1"
  if [ -d /run/systemd/system ] && [ -z "${SYNOD_NO_SYSTEMD:-}" ]; then
    install -m 644 "$REPO/deploy/systemd/synod-up.service" /etc/systemd/system/synod-up.service
    mkdir -p /etc/synod
    ln -sf "$config" /etc/synod/site.toml
    systemctl daemon-reload
    systemctl enable --now synod-up.service >/dev/null 2>&1 \
      || die "systemctl start synod-up failed; see journalctl -u synod-up"
    say "synod-up.service started"
  else
    synod up --config "$config" --detach >&2 || die "synod up failed (above)"
  fi
}

step_start() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --site) SITE="$2"; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  need SITE site
  start_site "$DATA_ROOT/$SITE/site.toml"
}

step_host() {  # a demo host: a network namespace on the site's bridge
  local name="" ip="" ns port peer
  while [ $# -gt 0 ]; do
    case "$1" in
      --site) SITE="$2"; shift 2 ;;
      --name) name="$2"; shift 2 ;;
      --ip) ip="$2"; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  need SITE site; need name name; need ip ip
  ns="synod-$SITE-$name"
  port="h-$SITE-$name"; port="${port:0:15}"
  peer="$name-eth0"; peer="${peer:0:15}"
  ip netns add "$ns" 2>/dev/null || true
  if ! ip link show "$port" >/dev/null 2>&1; then
    ip link add "$port" type veth peer name "$peer"
    ip link set "$peer" netns "$ns"
  fi
  ip link set "$port" up
  ethtool -K "$port" tx off >/dev/null 2>&1 || true
  ovs-vsctl --may-exist add-port "$BRIDGE" "$port"
  ip -n "$ns" link set lo up
  ip -n "$ns" link set "$peer" up
  ip netns exec "$ns" ethtool -K "$peer" tx off >/dev/null 2>&1 || true
  ip -n "$ns" addr replace "$ip" dev "$peer"
  say "host $name ($ip) in netns $ns on $BRIDGE"
}

usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; }

[ $# -gt 0 ] && shift
case "$STEP" in
  check|install|bridge|tunnel|found|publish|join|start|host) "step_$STEP" "$@" ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
