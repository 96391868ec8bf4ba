"""SSH through pyslirp: Debian's dropbear client in the VM logs in to an OpenSSH server on the
host's loopback (reached as service port 22 of 10.0.0.1), runs a command, and copies a file both
ways with ``cat``.

The test owns everything on the host side: a throwaway sshd (``/usr/sbin/sshd -D``, its own
config, a host key made with ssh-keygen, AuthorizedKeysFile pointing at a file the test writes),
on a free loopback port. The client key is made with ``dropbearkey`` on the host (dropbear-bin),
handed to the VM as /root/.ssh/id, and its public half goes into authorized_keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import rig
from dial import PPPD_QUIET as PPPD
from pyslirp_proc import PyslirpProcess

SSHD = "/usr/sbin/sshd"
COPY_SIZE = 256 << 10

SCRIPT = f"""
dd if=/dev/urandom of=/tmp/src bs=64k count={COPY_SIZE // 65536} 2>/dev/null
result src_sha "$(sha256sum /tmp/src | cut -d' ' -f1)"
{PPPD} &
PPPD_PID=$!
wait_ppp 40 || {{ result up 0; exit 1; }}
result up 1
SSH="dbclient -y -i /root/.ssh/id -p 22 $SSH_USER@10.0.0.1"
OUT=$($SSH 'echo hello; uname -s' 2>/tmp/err1); RC=$?
result command "$(echo $OUT)"
result command_rc $RC
$SSH "cat > '$DEST'" < /tmp/src 2>/tmp/err2; result copy_rc $?
$SSH "cat '$DEST'" > /tmp/back 2>/tmp/err3; result back_rc $?
result back_sha "$(sha256sum /tmp/back | cut -d' ' -f1)"
result errors "$(cat /tmp/err1 /tmp/err2 /tmp/err3 | tr '\\n' ' ')"
kill $PPPD_PID; wait $PPPD_PID || true
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def privsep_dir():
    """OpenSSH running as root insists on its privilege-separation directory (/run/sshd, which
    the openssh-server service creates at boot): make it if it is missing, remove it after."""
    path = Path("/run/sshd")
    made = False
    if os.geteuid() == 0 and not path.exists():
        path.mkdir(mode=0o755)
        made = True
    try:
        yield
    finally:
        if made:
            with contextlib.suppress(OSError):
                path.rmdir()


@contextlib.asynccontextmanager
async def sshd(tmp: Path, authorized_key: str):
    """A throwaway OpenSSH server on 127.0.0.1:<free port>, in the foreground; yields its port
    and the list its log lines are collected in."""
    host_key = tmp / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    authorized = tmp / "authorized_keys"
    authorized.write_text(authorized_key + "\n")
    authorized.chmod(0o600)
    port = rig.free_port()
    config = tmp / "sshd_config"
    config.write_text(f"""\
ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile {tmp / 'sshd.pid'}
AuthorizedKeysFile {authorized}
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
LogLevel VERBOSE
""")
    subprocess.run([SSHD, "-t", "-f", str(config)], check=True)  # the config is valid
    proc = await asyncio.create_subprocess_exec(
        SSHD, "-D", "-e", "-f", str(config),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    lines: list[str] = []

    async def read() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            lines.append(raw.decode(errors="replace").rstrip())

    reader = asyncio.create_task(read())
    try:
        for _ in range(100):  # until it listens
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                if proc.returncode is not None:
                    raise AssertionError("sshd exited:\n" + "\n".join(lines))
                await asyncio.sleep(0.05)
        yield port, lines
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
        await reader


async def test_ssh_session_runs_a_command_and_copies_a_file(rig_image, rig_accel, tmp_path: Path) -> None:
    for tool in ("dropbearkey", "ssh-keygen", SSHD):
        if shutil.which(tool) is None:
            if rig.in_ci():
                pytest.fail(f"{tool} is missing (apt-get install dropbear-bin openssh-server)")
            pytest.skip(f"{tool} is missing (apt-get install dropbear-bin openssh-server)")
    client_key = tmp_path / "id_dropbear"
    subprocess.run(["dropbearkey", "-t", "ed25519", "-f", str(client_key)], check=True, capture_output=True)
    public = subprocess.run(["dropbearkey", "-y", "-f", str(client_key)], check=True, capture_output=True,
                            text=True).stdout
    public_line = next(line for line in public.splitlines() if line.startswith("ssh-ed25519 "))
    dest = tmp_path / "copied"
    user = getpass.getuser()

    with privsep_dir():
        async with sshd(tmp_path, public_line) as (ssh_port, sshd_log):
            config = {"services": {22: {"host": "127.0.0.1", "port": ssh_port, "name": "SSH"}}}
            async with PyslirpProcess(config, debug=False) as server:
                res = await rig.run_vm_async(
                    rig_image, SCRIPT, line="16550", line_port=server.port, timeout=180, accel=rig_accel,
                    files={"/root/.ssh/id": client_key.read_bytes()},
                    env={"DEST": str(dest), "SSH_USER": user}, name="ssh")
    print(f"\nresults {res.results}\nsshd log:\n" + "\n".join(sshd_log))
    res.check()
    r = res.results
    assert r["command"].split() == ["hello", "Linux"], r.get("errors")
    assert r["command_rc"] == "0"
    assert r["copy_rc"] == "0" and r["back_rc"] == "0", r.get("errors")
    copied = dest.read_bytes()
    assert len(copied) == COPY_SIZE
    assert sha256(copied) == r["src_sha"]  # VM -> host
    assert r["back_sha"] == r["src_sha"]  # host -> VM
    assert any("Accepted publickey" in line for line in sshd_log)
    # the host key the client saw is the one of the sshd this test started
    fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / "ssh_host_ed25519_key.pub")],
                                 check=True, capture_output=True, text=True).stdout.split()[1]
    assert fingerprint in r["errors"]
    assert server.returncode in (0, None)
