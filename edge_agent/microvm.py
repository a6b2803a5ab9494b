"""The microvm image: a Debian cloud kernel and a busybox initramfs, built from Debian packages.

    build(cache_dir) -> Image(kernel, initrd, key)

Nothing is installed on the host: the kernel package is fetched with `apt-get download` and
unpacked with `dpkg-deb -x`; the initramfs holds busybox-static, the virtio (and VLAN)
modules in load order, and an /init that reads its whole configuration from the kernel
command line (`synod.*` parameters, see kernel_cmdline), so one image serves every service.
The result is cached under `<cache_dir>/<key>/`, where key hashes everything that goes
into it (kernel package, busybox binary, module list, init script): a second build with
the same inputs only checks the cache. See docs/edge-agent.md.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_CACHE", "INIT_SCRIPT", "Image", "ImageError", "build", "kernel_cmdline"]

DEFAULT_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "microvm"
KERNEL_META = "linux-image-cloud-amd64"
BUSYBOX = Path("/bin/busybox")
# Load order matters: each needs the ones before it (FIELD-NOTES, QEMU).
MODULES = (
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/net/core/failover.ko",
    "kernel/drivers/net/net_failover.ko",
    "kernel/drivers/net/virtio_net.ko",
    # VLAN sub-interfaces (a NIC with `vlan:`).
    "kernel/net/llc/llc.ko",
    "kernel/net/802/stp.ko",
    "kernel/net/802/garp.ko",
    "kernel/net/802/mrp.ko",
    "kernel/net/8021q/8021q.ko",
)
STAMP = "built"  # written last: a cache folder without it is an interrupted build
STEP_TIMEOUT_S = 300

# The guest's /init. Parameters (kernel command line):
#   synod.name=NAME                 answered at http://IP:HTTP_PORT/
#   synod.nic<i>=MAC,IP/PREFIX[,VLAN]  one per NIC, matched to the interface by MAC
#   synod.http=PORT synod.health=PORT synod.healthpath=/PATH  (health answers "ok" there)
# On the serial console it prints "synod-microvm: ready ..." once both servers listen, then
# "synod-microvm: health ok|fail" whenever its own check of the health URL changes.
INIT_SCRIPT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /www /health
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for m in $(cat /modules.order); do
  insmod /modules/$m || echo "synod-microvm: insmod $m failed"
done
ip link set lo up
name=unnamed http=80 health=8080 hpath=
for p in $(cat /proc/cmdline); do
  case "$p" in
    synod.name=*) name="${p#synod.name=}" ;;
    synod.http=*) http="${p#synod.http=}" ;;
    synod.health=*) health="${p#synod.health=}" ;;
    synod.healthpath=*) hpath="${p#synod.healthpath=}" ;;
  esac
done
for p in $(cat /proc/cmdline); do
  case "$p" in
    synod.nic*=*)
      v="${p#*=}"; mac="${v%%,*}"; rest="${v#*,}"; addr="${rest%%,*}"; vlan=""
      [ "$rest" != "$addr" ] && vlan="${rest#*,}"
      dev=""
      for i in 1 2 3 4 5 6 7 8 9 10; do
        for d in /sys/class/net/*; do
          [ "$(cat $d/address)" = "$mac" ] && dev="${d##*/}"
        done
        [ -n "$dev" ] && break
        sleep 0.2
      done
      if [ -z "$dev" ]; then echo "synod-microvm: no interface with MAC $mac"; continue; fi
      ip link set "$dev" up
      if [ -n "$vlan" ]; then
        ip link add link "$dev" name "$dev.$vlan" type vlan id "$vlan"
        ip link set "$dev.$vlan" up
        dev="$dev.$vlan"
      fi
      ip addr add "$addr" dev "$dev"
      echo "synod-microvm: $dev $mac $addr"
      ;;
  esac
done
echo "$name" > /www/index.html
hroot=/health
[ "$health" = "$http" ] && hroot=/www
# A health path of its own answers "ok"; a TCP check (no path) or the service's own page
# is checked as it is, never overwritten.
hfile="$hroot$hpath"
case "$hpath" in */) hfile="${hfile}index.html" ;; esac
if [ -z "$hpath" ]; then
  [ "$health" != "$http" ] && echo ok > /health/index.html
elif [ ! -e "$hfile" ]; then
  mkdir -p "${hfile%/*}"; echo ok > "$hfile"
fi
httpd -p "$http" -h /www
[ "$health" != "$http" ] && httpd -p "$health" -h /health
echo "synod-microvm: ready $name http $http health $health$hpath"
# The health check, from inside the guest: its result on the console when it changes.
last=""
while true; do
  if timeout 2 wget -q -O /dev/null "http://127.0.0.1:$health${hpath:-/}"; then s=ok
  else s=fail; fi
  [ "$s" != "$last" ] && echo "synod-microvm: health $s" && last=$s
  sleep 2
done
"""


class ImageError(Exception):
    """The image could not be built; the message says which step failed and why."""


@dataclass(frozen=True)
class Image:
    kernel: Path
    initrd: Path
    key: str  # hex digest of the build's inputs: the image part of a service's hash


def kernel_cmdline(name: str, nics: list[tuple[str, str, int | None]], http_port: int,
                   health_port: int, health_path: str = "") -> str:
    """The guest's command line: console on the serial port, reboot (QEMU exits, -no-reboot)
    one second after a panic, and the synod.* parameters the /init reads."""
    parts = ["console=ttyS0", "panic=1", "quiet", f"synod.name={name}",
             f"synod.http={http_port}", f"synod.health={health_port}",
             *([f"synod.healthpath={health_path}"] if health_path else [])]
    for i, (mac, cidr, vlan) in enumerate(nics):
        parts.append(f"synod.nic{i}={mac},{cidr}" + (f",{vlan}" if vlan is not None else ""))
    return " ".join(parts)


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=STEP_TIMEOUT_S,
                              cwd=cwd, check=False)
    except FileNotFoundError:
        raise ImageError(f"{what}: {cmd[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise ImageError(f"{what}: no answer in {STEP_TIMEOUT_S} s") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise ImageError(f"{what} failed: {tail[0][:300]}")
    return done.stdout


def kernel_package() -> str:
    """The versioned package the cloud kernel meta-package points at (from apt's lists)."""
    out = _run(["apt-cache", "depends", KERNEL_META], f"apt-cache depends {KERNEL_META}")
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends:") and "linux-image-" in line:
            return line.split(":", 1)[1].strip()
    raise ImageError(f"{KERNEL_META}: apt knows no kernel package for it (apt-get update?)")


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(package: str, busybox: Path = BUSYBOX) -> str:
    if not busybox.is_file():
        raise ImageError(f"{busybox}: not found (apt-get install busybox-static)")
    h = hashlib.sha256()
    for part in (package, _file_hash(busybox), "\n".join(MODULES), INIT_SCRIPT):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def cached(cache_dir: Path = DEFAULT_CACHE) -> Image | None:
    """The newest complete build in the cache, without asking apt (offline use)."""
    builds = [d for d in cache_dir.glob("*") if (d / STAMP).is_file()] if cache_dir.is_dir() \
        else []
    if not builds:
        return None
    d = max(builds, key=lambda p: (p / STAMP).stat().st_mtime)
    return Image(d / "vmlinuz", d / "initrd.img", d.name)


def build(cache_dir: Path = DEFAULT_CACHE, busybox: Path = BUSYBOX) -> Image:
    """The image for the current kernel package; built once, then read from the cache."""
    package = kernel_package()
    key = cache_key(package, busybox)
    out = cache_dir / key
    image = Image(out / "vmlinuz", out / "initrd.img", key)
    if (out / STAMP).is_file() and image.kernel.is_file() and image.initrd.is_file():
        _prune(cache_dir, key)
        return image
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="synod-microvm-", dir=cache_dir) as tmp_text:
        tmp = Path(tmp_text)
        _run(["apt-get", "download", package], f"apt-get download {package}", cwd=tmp)
        debs = sorted(tmp.glob("*.deb"))
        if len(debs) != 1:
            raise ImageError(f"apt-get download {package}: expected one .deb, got {len(debs)}")
        root = tmp / "kernel"
        _run(["dpkg-deb", "-x", str(debs[0]), str(root)], f"dpkg-deb -x {debs[0].name}")
        vmlinuz = sorted((root / "boot").glob("vmlinuz-*"))
        versions = sorted((root / "lib" / "modules").glob("*"))
        if len(vmlinuz) != 1 or len(versions) != 1:
            raise ImageError(f"{package}: expected one kernel and one module folder")
        stage = tmp / "initramfs"
        for sub in ("bin", "modules", "proc", "sys", "dev", "tmp"):
            (stage / sub).mkdir(parents=True)
        shutil.copy2(busybox, stage / "bin" / "busybox")
        (stage / "bin" / "sh").symlink_to("busybox")
        names = []
        for rel in MODULES:
            src = versions[0] / rel
            if not src.is_file():
                raise ImageError(f"{package}: module {rel} missing")
            shutil.copy2(src, stage / "modules" / src.name)
            names.append(src.name)
        (stage / "modules.order").write_text("\n".join(names) + "\n")
        init = stage / "init"
        init.write_text(INIT_SCRIPT)
        init.chmod(0o755)
        files = sorted(str(p.relative_to(stage)) for p in stage.rglob("*"))
        cpio = tmp / "initrd.cpio"
        with cpio.open("wb") as f:
            done = subprocess.run([str(busybox), "cpio", "-o", "-H", "newc"], cwd=stage,
                                  input="\n".join(files).encode(), stdout=f,
                                  stderr=subprocess.PIPE, timeout=STEP_TIMEOUT_S, check=False)
        if done.returncode != 0:
            raise ImageError(f"busybox cpio failed: {done.stderr.decode()[-300:]}")
        staged = tmp / "out"
        staged.mkdir()
        shutil.copy2(vmlinuz[0], staged / "vmlinuz")
        shutil.copy2(cpio, staged / "initrd.img")
        (staged / STAMP).write_text(f"{package}\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staged, out)
    _prune(cache_dir, key)
    return image


def _prune(cache_dir: Path, key: str) -> None:
    """Remove earlier builds (other inputs); a running QEMU read its kernel at launch."""
    for old in cache_dir.iterdir():
        if old.name != key and (old / STAMP).is_file():
            shutil.rmtree(old, ignore_errors=True)
