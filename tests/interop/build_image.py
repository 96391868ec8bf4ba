#!/usr/bin/env python3
"""Build the interop rig's guest image from Debian packages: a kernel and an initramfs.

The guest is Debian's unmodified kernel (linux-image-amd64 → linux-image-6.x-amd64), its ppp and
virtio modules, Debian's ``pppd`` (package ppp), busybox (busybox-static) and dropbear's SSH client
``dbclient`` (dropbear-bin), with the shared libraries those two link against taken from the same
Debian release's library packages. Nothing is installed on the host: every package is fetched with
``apt-get download`` and unpacked with ``dpkg -x`` into a scratch directory.

The output is cached under ``$PYSLIRP_RIG_CACHE`` (default ``tests/interop/.cache``) in a directory
named by a hash of this script and of ``guest/`` (the init and helpers copied into the image), so
an image is built once and reused until the recipe changes::

    <cache>/image-<key>/vmlinuz
    <cache>/image-<key>/initrd.gz
    <cache>/image-<key>/manifest.json   (kernel version, package versions, module load order)

Host needs (Debian 12, as root or with a working ``apt-get download``): apt, dpkg, python3.
No cpio/gzip/kmod: the newc archive, the gzip stream, the ELF ``DT_NEEDED`` and ``.modinfo``
readers and ``modules.dep`` are all written here, so the image is byte-for-byte reproducible for
a given set of package versions.

Usage: ``python3 tests/interop/build_image.py [--cache-dir DIR] [--force]`` prints the image dir.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
GUEST_DIR = HERE / "guest"
DEFAULT_CACHE = HERE / ".cache"

# Kernel modules the guest loads at boot, in the order given (dependencies are added before each
# one from the modules' own .modinfo "depends="). Built-in ones (see modules.builtin) are skipped.
GUEST_MODULES = [
    "slhc",
    "ppp_generic",
    "ppp_async",
    "crc-ccitt",  # built into Debian's kernel (CONFIG_CRC_CCITT=y); listed to check that it is
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_console",
    "qemu_fw_cfg",
    # Loaded like Debian's pppd would load them on demand, so the client offers CCP as in real life.
    "bsd_comp",
    "ppp_deflate",
]

USER_PACKAGES = ["ppp", "busybox-static", "dropbear-bin"]
# Library packages never needed by pppd/dbclient at run time (PAM modules are dlopen()ed only with
# pppd's "login" option, which the rig does not use).
SKIP_PACKAGES = {"libpam-modules", "libpam-modules-bin", "libpam-runtime"}
# Files taken from the unpacked packages into the image.
BINARIES = ["usr/sbin/pppd", "usr/sbin/chat", "usr/bin/dbclient", "usr/bin/dropbearkey",
            "usr/bin/dropbearconvert", "usr/sbin/dropbear"]
LIB_DIRS = ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib"]
LOADER = "lib64/ld-linux-x86-64.so.2"


def log(msg: str) -> None:
    print(f"[build_image] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# cache key and location


def cache_key() -> str:
    """Hash of this script and of every file under guest/ (what ends up in the image)."""
    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    for p in sorted(GUEST_DIR.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(GUEST_DIR)).encode() + b"\0")
            h.update(p.read_bytes())
    h.update(_pbench_key())
    return h.hexdigest()[:16]


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    if override is not None:
        return Path(override)
    env = os.environ.get("PYSLIRP_RIG_CACHE")
    return Path(env) if env else DEFAULT_CACHE


@dataclass(frozen=True)
class ImagePaths:
    dir: Path
    kernel: Path  # Debian's bzImage as shipped
    initrd: Path
    manifest: Path
    vmlinux: Path  # the same kernel, decompressed ahead of time (ELF with a PVH entry point)

    @classmethod
    def at(cls, d: Path) -> "ImagePaths":
        return cls(d, d / "vmlinuz", d / "initrd.gz", d / "manifest.json", d / "vmlinux")

    @property
    def has_pvh(self) -> bool:
        return self.vmlinux.is_file()

    def complete(self) -> bool:
        return self.kernel.is_file() and self.initrd.is_file() and self.manifest.is_file()


# ---------------------------------------------------------------------------------------------
# apt / dpkg


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


_apt_updated = False


def apt_update_once(why: str) -> None:
    """Run `apt-get update` (once per build) when the package lists are missing or stale."""
    global _apt_updated
    if _apt_updated or os.geteuid() != 0:
        raise RuntimeError(f"{why} (run `apt-get update` as root first)")
    log(f"{why}; running apt-get update")
    run(["apt-get", "update", "-q"])
    _apt_updated = True


def ensure_apt_lists() -> None:
    """Make sure apt knows the packages we need (a fresh machine may have no lists yet)."""
    probe = ["apt-cache", "show", "--no-all-versions", "linux-image-amd64", *USER_PACKAGES]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        apt_update_once("apt does not know linux-image-amd64/ppp/busybox-static/dropbear-bin")


def apt_depends(pkgs: list[str]) -> dict[str, list[str]]:
    """Hard dependencies of each package (first alternative of each Depends/Pre-Depends)."""
    out = run(["apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts",
               "--no-breaks", "--no-replaces", "--no-enhances", *pkgs]).stdout
    deps: dict[str, list[str]] = {}
    cur: str | None = None
    in_alt = False
    for line in out.splitlines():
        if not line.startswith(" "):
            cur = line.strip()
            deps[cur] = []
            in_alt = False
            continue
        m = re.match(r"\s+(\|?)(Pre)?Depends: (\S+)", line)
        if not m or cur is None:
            continue
        name = m.group(3)
        # "|Depends: a" followed by "Depends: b" means "a | b": take a only.
        if not in_alt and not name.startswith("<"):
            deps[cur].append(name)
        in_alt = m.group(1) == "|"
    return deps


def apt_download(pkgs: list[str], dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    # _apt cannot write into a private temp dir; apt then downloads as root and warns, which is fine.
    cmd = ["apt-get", "download", "-q", *pkgs]
    try:
        run(cmd, cwd=dest)
    except subprocess.CalledProcessError as e:
        # stale lists name versions the mirror no longer has
        apt_update_once(f"apt-get download failed: {e.stderr.strip()[-500:]}")
        try:
            run(cmd, cwd=dest)
        except subprocess.CalledProcessError as e2:
            raise RuntimeError(f"apt-get download failed:\n{e2.stderr}") from e2
    debs = sorted(dest.glob("*.deb"))
    return debs


def deb_field(deb: Path, fld: str) -> str:
    return run(["dpkg-deb", "-f", str(deb), fld]).stdout.strip()


def resolve_kernel_package() -> str:
    deps = apt_depends(["linux-image-amd64"]).get("linux-image-amd64", [])
    for d in deps:
        if re.fullmatch(r"linux-image-\d+\.\d+.*-amd64", d):
            return d
    raise RuntimeError(f"cannot resolve linux-image-amd64 to a versioned kernel package: {deps}")


def library_closure(roots: list[str]) -> list[str]:
    """All lib* packages reachable from roots through hard dependencies."""
    seen: set[str] = set()
    frontier = list(roots)
    while frontier:
        deps = apt_depends(frontier)
        nxt: list[str] = []
        for pkg_deps in deps.values():
            for d in pkg_deps:
                if d.startswith(("lib", "zlib")) and d not in SKIP_PACKAGES and d not in seen:
                    seen.add(d)
                    nxt.append(d)
        frontier = nxt
    return sorted(seen)


# ---------------------------------------------------------------------------------------------
# ELF: DT_NEEDED and sections (64-bit little-endian only: the guest is x86_64)


class Elf:
    def __init__(self, data: bytes) -> None:
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise ValueError("not an ELF64 little-endian file")
        self.data = data
        (self.e_type, _, _, _, self.e_phoff, self.e_shoff, _, _, self.e_phentsize, self.e_phnum,
         self.e_shentsize, self.e_shnum, self.e_shstrndx) = struct.unpack_from(
            "<HHIQQQIHHHHHH", data, 16)

    def sections(self) -> dict[str, bytes]:
        d = self.data
        shdrs = [struct.unpack_from("<IIQQQQIIQQ", d, self.e_shoff + i * self.e_shentsize)
                 for i in range(self.e_shnum)]
        if not shdrs:
            return {}
        strtab = shdrs[self.e_shstrndx]
        names = d[strtab[4]:strtab[4] + strtab[5]]
        out = {}
        for sh in shdrs:
            name = names[sh[0]:names.index(b"\0", sh[0])].decode()
            if sh[1] != 8:  # SHT_NOBITS has no file contents
                out[name] = d[sh[4]:sh[4] + sh[5]]
        return out

    def needed(self) -> list[str]:
        d = self.data
        loads = []
        dyn = None
        for i in range(self.e_phnum):
            p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from(
                "<IIQQQQQQ", d, self.e_phoff + i * self.e_phentsize)
            if p_type == 1:
                loads.append((p_vaddr, p_offset, p_filesz))
            elif p_type == 2:
                dyn = (p_offset, p_filesz)
        if dyn is None:
            return []
        entries = [struct.unpack_from("<qQ", d, dyn[0] + i) for i in range(0, dyn[1], 16)]
        strtab_vaddr = next((v for t, v in entries if t == 5), None)  # DT_STRTAB
        if strtab_vaddr is None:
            return []
        strtab_off = next(off + strtab_vaddr - va for va, off, sz in loads
                          if va <= strtab_vaddr < va + sz)
        out = []
        for tag, val in entries:
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                s = strtab_off + val
                out.append(d[s:d.index(b"\0", s)].decode())
        return out


def modinfo(ko: bytes) -> dict[str, list[str]]:
    sec = Elf(ko).sections().get(".modinfo", b"")
    info: dict[str, list[str]] = {}
    for item in sec.split(b"\0"):
        if b"=" in item:
            k, v = item.decode(errors="replace").split("=", 1)
            info.setdefault(k, []).append(v)
    return info


# ---------------------------------------------------------------------------------------------
# initramfs tree and newc archive


@dataclass
class Tree:
    """The initramfs content: path (no leading /) -> entry."""

    entries: dict[str, tuple] = field(default_factory=dict)

    def _parents(self, path: str) -> None:
        """Create the missing parent directories of path (0755); existing ones keep their mode."""
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.entries.setdefault("/".join(parts[:i]), ("dir", 0o755))

    def dir(self, path: str, mode: int = 0o755) -> None:
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = ("dir", mode)

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = ("file", mode, data)

    def symlink(self, path: str, target: str) -> None:
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = ("symlink", target)

    def chardev(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = ("chr", mode, major, minor)

    def newc(self) -> bytes:
        out = io.BytesIO()
        ino = 1

        def put(name: str, mode: int, data: bytes = b"", nlink: int = 1,
                rmaj: int = 0, rmin: int = 0) -> None:
            nonlocal ino
            nb = name.encode() + b"\0"
            hdr = "070701" + "".join(f"{x:08X}" for x in (
                ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmaj, rmin, len(nb), 0))
            out.write(hdr.encode() + nb)
            out.write(b"\0" * ((-(110 + len(nb))) % 4))
            out.write(data)
            out.write(b"\0" * ((-len(data)) % 4))
            ino += 1

        for path in sorted(self.entries):  # parents sort before children
            e = self.entries[path]
            if e[0] == "dir":
                put(path, stat.S_IFDIR | e[1], nlink=2)
            elif e[0] == "file":
                put(path, stat.S_IFREG | e[1], e[2])
            elif e[0] == "symlink":
                put(path, stat.S_IFLNK | 0o777, e[1].encode())
            elif e[0] == "chr":
                put(path, stat.S_IFCHR | e[1], rmaj=e[2], rmin=e[3])
        ino = 0
        put("TRAILER!!!", 0)
        return out.getvalue()


def find_lib(soname: str, roots: list[Path]) -> Path | None:
    for root in roots:
        for d in LIB_DIRS:
            p = root / d / soname
            if p.exists():
                return p
    return None


def add_elf_with_libs(tree: Tree, sysroot: Path, rel: str, done: set[str]) -> None:
    """Add sysroot/rel and, recursively, every shared library it needs (from sysroot, else host)."""
    src = sysroot / rel
    data = src.read_bytes()
    tree.file(rel, data, stat.S_IMODE(src.stat().st_mode) | 0o444)
    todo = Elf(data).needed()
    while todo:
        so = todo.pop()
        if so in done:
            continue
        done.add(so)
        p = find_lib(so, [sysroot])
        if p is None:
            p = find_lib(so, [Path("/")])
            if p is None:
                raise RuntimeError(f"{rel}: shared library {so} not found in the unpacked packages")
            log(f"warning: {so} taken from the host, not from the unpacked packages")
        libdata = p.resolve().read_bytes()
        tree.file(f"lib/x86_64-linux-gnu/{so}", libdata, 0o755)
        todo.extend(Elf(libdata).needed())


# ---------------------------------------------------------------------------------------------
# the build


def build(out: Path, work: Path) -> dict:
    t0 = time.monotonic()
    debs = work / "debs"
    ensure_apt_lists()
    kpkg = resolve_kernel_package()
    libs = library_closure(["ppp", "dropbear-bin"])
    log(f"kernel package {kpkg}; libraries: {' '.join(libs)}")
    apt_download([kpkg, *USER_PACKAGES, *libs], debs)
    versions = {}
    sysroot = work / "sysroot"
    kroot = work / "kernel"
    for deb in sorted(debs.glob("*.deb")):
        name = deb_field(deb, "Package")
        versions[name] = deb_field(deb, "Version")
        run(["dpkg", "-x", str(deb), str(kroot if name == kpkg else sysroot)])
    log(f"downloaded and unpacked {len(versions)} packages in {time.monotonic() - t0:.1f}s")

    tree = Tree()
    for d in ["dev", "proc", "sys", "run", "tmp", "root", "etc", "var", "mnt", "usr/bin", "usr/sbin",
              "bin", "sbin", "lib/x86_64-linux-gnu", "lib64"]:
        tree.dir(d)
    tree.dir("tmp", 0o1777)
    tree.dir("root", 0o700)
    tree.dir("root/.ssh", 0o700)
    tree.symlink("var/run", "/run")
    tree.symlink("var/lock", "/run/lock")
    tree.dir("var/log")
    tree.chardev("dev/console", 5, 1)
    tree.chardev("dev/null", 1, 3, 0o666)

    # busybox and its applet links
    bb = sysroot / "bin/busybox"
    tree.file("bin/busybox", bb.read_bytes(), 0o755)
    applets = run([str(bb), "--list-full"]).stdout.split()
    for a in applets:
        if a != "bin/busybox":
            tree.symlink(a, "/bin/busybox")

    # pppd, dbclient & co. with their shared libraries, and the dynamic loader
    done: set[str] = set()
    for rel in BINARIES:
        add_elf_with_libs(tree, sysroot, rel, done)
    tree.symlink(LOADER, "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    if "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" not in tree.entries:
        raise RuntimeError("dynamic loader not pulled in")

    # Debian's /etc/ppp as shipped by the ppp package (options, ip-up, ip-up.d …), plus our hook
    etc_ppp = sysroot / "etc/ppp"
    for p in sorted(etc_ppp.rglob("*")):
        rel = "etc/ppp/" + str(p.relative_to(etc_ppp))
        if p.is_dir():
            tree.dir(rel, stat.S_IMODE(p.stat().st_mode))
        elif p.is_file():
            tree.file(rel, p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
    for name in ["pap-secrets", "chap-secrets"]:
        tree.file(f"etc/ppp/{name}", b"# client\tserver\tsecret\tIP addresses\n", 0o600)
    tree.file("etc/ppp/ip-up.d/zz-pyslirp", (GUEST_DIR / "ppp-hook").read_bytes(), 0o755)
    tree.file("etc/ppp/ip-down.d/zz-pyslirp", (GUEST_DIR / "ppp-hook").read_bytes(), 0o755)

    # the benchmarks' guest tool (see "benchmark tool" below), if this host can build it
    pbench = build_pbench(work)
    if pbench is not None:
        tree.file(PBENCH_GUEST_PATH, pbench, 0o755)

    # guest init and the helpers scripts are sourced with
    tree.file("init", (GUEST_DIR / "init").read_bytes(), 0o755)
    tree.file("etc/pyslirp/lib.sh", (GUEST_DIR / "lib.sh").read_bytes(), 0o644)

    # what pppd, dbclient and busybox look up
    tree.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    tree.file("etc/group", b"root:x:0:\ndip:x:30:\nnogroup:x:65534:\n")
    tree.file("etc/shadow", b"root:*:19000:0:99999:7:::\n", 0o600)
    tree.file("etc/hosts", b"127.0.0.1\tlocalhost\n::1\tlocalhost\n")
    tree.file("etc/hostname", b"pyslirp-guest\n")
    tree.file("etc/nsswitch.conf", b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n")
    tree.file("etc/resolv.conf", b"")
    tree.file("etc/shells", b"/bin/sh\n")
    tree.file("etc/protocols", b"ip 0 IP\nicmp 1 ICMP\ntcp 6 TCP\nudp 17 UDP\n")
    tree.file("etc/services", b"ssh 22/tcp\ndomain 53/tcp\ndomain 53/udp\nhttp 80/tcp\n")

    # kernel and modules
    kvers = [p.name for p in (kroot / "lib/modules").iterdir()]
    if len(kvers) != 1:
        raise RuntimeError(f"expected one kernel version, got {kvers}")
    kver = kvers[0]
    mroot = kroot / "lib/modules" / kver
    vmlinuz = kroot / "boot" / f"vmlinuz-{kver}"
    builtin = {Path(line.strip()).name.split(".ko")[0].replace("-", "_")
               for line in (mroot / "modules.builtin").read_text().splitlines() if line.strip()}
    by_name: dict[str, Path] = {}
    for ko in mroot.rglob("*.ko*"):
        by_name[ko.name.split(".ko")[0].replace("-", "_")] = ko

    order: list[str] = []
    deps_of: dict[str, list[str]] = {}
    skipped_builtin: list[str] = []

    def want(mod: str, stack: tuple[str, ...] = ()) -> None:
        key = mod.replace("-", "_")
        if key in order:
            return
        if key in builtin:
            if key not in skipped_builtin:
                skipped_builtin.append(key)
            return
        if key in stack:
            raise RuntimeError(f"module dependency cycle: {stack + (key,)}")
        ko = by_name.get(key)
        if ko is None:
            raise RuntimeError(f"module {mod} neither built in nor shipped in {kpkg}")
        raw = ko.read_bytes()
        if ko.name.endswith(".xz"):
            raw = lzma.decompress(raw)
        elif ko.name.endswith(".zst"):
            raw = subprocess.run(["zstd", "-dc"], input=raw, capture_output=True, check=True).stdout
        deps = [d for d in ",".join(modinfo(raw).get("depends", [""])).split(",") if d]
        deps_of[key] = [d.replace("-", "_") for d in deps]
        for d in deps:
            want(d, stack + (key,))
        rel = str(ko.relative_to(mroot)).split(".ko")[0] + ".ko"  # stored uncompressed
        tree.file(f"lib/modules/{kver}/{rel}", raw, 0o644)
        order.append(key)

    for m in GUEST_MODULES:
        want(m)
    relpath = {m: str(by_name[m].relative_to(mroot)).split(".ko")[0] + ".ko" for m in order}
    dep_lines = []
    for m in order:
        closure: list[str] = []

        def walk(x: str) -> None:
            for d in deps_of[x]:
                if d in deps_of and relpath[d] not in closure:
                    closure.append(relpath[d])
                    walk(d)
        walk(m)
        dep_lines.append(f"{relpath[m]}: {' '.join(closure)}".rstrip())
    tree.file(f"lib/modules/{kver}/modules.dep", ("\n".join(dep_lines) + "\n").encode())
    for f in ["modules.builtin", "modules.order", "modules.builtin.modinfo"]:
        if (mroot / f).exists():
            tree.file(f"lib/modules/{kver}/{f}", (mroot / f).read_bytes())
    tree.file("etc/pyslirp/modules", "".join(f"{relpath[m]}\n" for m in order).encode())
    tree.file("etc/pyslirp/kernel-version", f"{kver}\n".encode())

    # Check that the dynamic binaries run in the tree (needs root for chroot; skipped otherwise).
    archive = tree.newc()
    if os.geteuid() == 0:
        check_root = work / "check-root"
        _unpack_for_check(tree, check_root)
        for cmd in (["/usr/sbin/pppd", "--version"], ["/usr/bin/dbclient", "-V"],
                    ["/bin/sh", "-c", "echo ok"]):
            r = subprocess.run(["chroot", str(check_root), *cmd], capture_output=True, text=True,
                               timeout=30)
            text = (r.stdout + r.stderr).strip()
            if "error while loading shared libraries" in text or "not found" in text.lower() \
                    or (cmd[0] == "/bin/sh" and r.returncode != 0):
                raise RuntimeError(f"{cmd} does not run in the image: {text}")
            log(f"check {' '.join(cmd)}: {text.splitlines()[0] if text else r.returncode}")

    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(vmlinuz, out / "vmlinuz")
    vmlinux = extract_vmlinux(vmlinuz.read_bytes())
    if vmlinux is not None:
        (out / "vmlinux").write_bytes(vmlinux)
    else:
        log("warning: no PVH-bootable ELF in the bzImage; the rig boots the bzImage (slower)")
    with open(out / "initrd.gz", "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=6, mtime=0) as gz:
            gz.write(archive)
    manifest = {
        "key": cache_key(),
        "kernel_package": kpkg,
        "kernel_version": kver,
        "packages": versions,
        "modules": order,
        "builtin_modules_requested": skipped_builtin,
        "binaries": BINARIES,
        "pbench": pbench is not None,
        "initrd_bytes": (out / "initrd.gz").stat().st_size,
        "pvh_vmlinux": vmlinux is not None,
        "build_seconds": round(time.monotonic() - t0, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# ---------------------------------------------------------------------------------------------
# benchmark tool: /usr/bin/pbench, the guest side of benchmarks/e2e/ (TCP echo RTT, bulk, N
# connections held, short-connection rate; busybox has no tool for these). One C file, linked
# statically against the host's glibc: needs the apt packages gcc and libc6-dev. Without them the
# image is built without the tool (the interop tests don't use it) and the benchmarks say so.

PBENCH_SRC = HERE.parent.parent / "benchmarks" / "e2e" / "guest" / "pbench.c"
PBENCH_GUEST_PATH = "usr/bin/pbench"
STATIC_LIBC = Path("/usr/lib/x86_64-linux-gnu/libc.a")


def _pbench_buildable() -> bool:
    return PBENCH_SRC.is_file() and shutil.which("gcc") is not None and STATIC_LIBC.is_file()


def _pbench_key() -> bytes:
    """Part of the cache key: the tool's source and whether this host can build it."""
    if not _pbench_buildable():
        return b"pbench:none"
    return b"pbench:" + PBENCH_SRC.read_bytes()


def build_pbench(work: Path) -> bytes | None:
    if not _pbench_buildable():
        log(f"warning: no gcc/static libc (apt packages gcc libc6-dev) or no {PBENCH_SRC}: "
            "the image has no pbench (benchmarks/e2e needs it)")
        return None
    out = work / "pbench"
    try:
        run(["gcc", "-static", "-O2", "-o", str(out), str(PBENCH_SRC)])
    except subprocess.CalledProcessError as e:
        log(f"warning: building pbench failed, the image has none:\n{e.stderr}")
        return None
    return out.read_bytes()


def extract_vmlinux(bzimage: bytes) -> bytes | None:
    """The ELF kernel inside a bzImage, as its own decompressor would unpack it.

    QEMU boots such an ELF through its PVH entry point, skipping the in-guest decompression
    (about 3 s of a TCG boot's 6 s). Returns None if no payload or no PVH note is found."""
    payload = None
    i = bzimage.find(b"\xfd7zXZ\x00")
    if i >= 0:
        with contextlib.suppress(lzma.LZMAError):
            payload = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[i:])
    if payload is None:
        i = bzimage.find(b"\x1f\x8b\x08\x00")
        if i >= 0:
            with contextlib.suppress(OSError, EOFError, zlib.error):
                payload = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(bzimage[i:])
    if payload is None:
        i = bzimage.find(b"\x28\xb5\x2f\xfd")
        if i >= 0 and shutil.which("zstd"):
            r = subprocess.run(["zstd", "-dc"], input=bzimage[i:], capture_output=True)
            payload = r.stdout if r.stdout[:4] == b"\x7fELF" else None
    if not payload or payload[:4] != b"\x7fELF":
        return None
    notes = b"".join(v for k, v in Elf(payload).sections().items() if k.startswith(".note"))
    # XEN_ELFNOTE_PHYS32_ENTRY (18) in a "Xen" note: the PVH entry point
    off = 0
    while off + 12 <= len(notes):
        namesz, descsz, ntype = struct.unpack_from("<III", notes, off)
        name = notes[off + 12:off + 12 + namesz].rstrip(b"\0")
        if name == b"Xen" and ntype == 18:
            return payload
        off += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return None


def _unpack_for_check(tree: Tree, root: Path) -> None:
    for path in sorted(tree.entries):
        e = tree.entries[path]
        p = root / path
        if e[0] == "dir":
            p.mkdir(parents=True, exist_ok=True)
        elif e[0] == "file":
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(e[2])
            p.chmod(e[1])
        elif e[0] == "symlink":
            p.parent.mkdir(parents=True, exist_ok=True)
            p.symlink_to(e[1])


def ensure_image(cache: str | os.PathLike[str] | None = None, force: bool = False) -> ImagePaths:
    """Return the cached image for the current recipe, building it first if needed.

    Safe to call from several processes at once: the build runs under a file lock.
    """
    root = cache_dir(cache)
    root.mkdir(parents=True, exist_ok=True)
    key = cache_key()
    img = ImagePaths.at(root / f"image-{key}")
    if img.complete() and not force:
        return img
    with open(root / f"lock-{key}", "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)
        if img.complete() and not force:
            return img
        log(f"building image {key} into {root}")
        with tempfile.TemporaryDirectory(prefix="build-", dir=root) as tmp:
            staged = Path(tmp) / "out"
            manifest = build(staged, Path(tmp))
            if img.dir.exists():
                shutil.rmtree(img.dir)
            os.replace(staged, img.dir)
        log(f"built {img.dir} in {manifest['build_seconds']}s")
        # drop images of older recipes
        for old in root.glob("image-*"):
            if old.is_dir() and old != img.dir:
                shutil.rmtree(old, ignore_errors=True)
        for old in root.glob("lock-*"):
            if old.name != f"lock-{key}":
                old.unlink(missing_ok=True)
    return img


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache-dir", help="cache root (default $PYSLIRP_RIG_CACHE or tests/interop/.cache)")
    ap.add_argument("--force", action="store_true", help="rebuild even if cached")
    ap.add_argument("--key", action="store_true", help="print the cache key and exit")
    args = ap.parse_args(argv)
    if args.key:
        print(cache_key())
        return 0
    img = ensure_image(args.cache_dir, force=args.force)
    print(img.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
