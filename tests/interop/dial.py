"""Dialling pyslirp from the VM with Linux pppd, as the PPP link tests and others do: the pppd
command line, the script that waits for IPCP and reports the addresses, and its checks."""

from __future__ import annotations

import rig
from pyslirp_proc import PyslirpProcess

# Debian's /etc/ppp/options asks for crtscts and auth; a dial-up client to pyslirp says
# nocrtscts (QEMU's socket line has no modem lines) and noauth (we don't authenticate to it).
#: the pppd command line every interop test dials with (add options after it)
PPPD_QUIET = "pppd $PPP_TTY 115200 nodetach local noauth nocrtscts nodefaultroute maxfail 1"
#: the same with pppd's packet log on the console (the PPP link tests read it)
PPPD = PPPD_QUIET.replace("nodetach", "nodetach debug")

UP_SCRIPT = """
{pppd} {options} &
PPPD_PID=$!
wait_ppp 40 || {{ result up 0; exit 1; }}
result up 1
result local "$PPP_LOCAL"
result remote "$PPP_REMOTE"
{body}
kill $PPPD_PID; wait $PPPD_PID
result pppd_exit $?
"""


async def run_pppd(image, accel, server: PyslirpProcess, *, line: str = "16550", options: str = "",
                   body: str = "", files=None, timeout: float = 120) -> rig.VMResult:
    script = UP_SCRIPT.format(pppd=PPPD, options=options, body=body)
    return await rig.run_vm_async(image, script, line=line, line_port=server.port, timeout=timeout,
                                  accel=accel, files=files)


def assert_addresses(res: rig.VMResult) -> None:
    res.check()
    assert res.results["up"] == "1"
    assert res.results["local"] == "10.0.0.2"
    assert res.results["remote"] == "10.0.0.1"


PAP_CONFIG = {"ppp": {"auth": {"method": "pap", "users": {"alice": "wonderland"}}}}
