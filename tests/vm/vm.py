"""Boot the cached VM image (tests/vm/image.sh) under qemu and drive it over ssh.

One `VM` is one qemu process on a throw-away qcow2 overlay of the image, with two loopback
ports forwarded to the guest's 22 (ssh) and 8000 (the hub). The guest has no other network
(`-netdev user,restrict=on`). qemu runs under software emulation (TCG): KVM hangs on these
machines (see machine.md), so boot takes ~30 s and everything inside is slow.
"""

import os
import shlex
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.ports import free_port

HERE = Path(__file__).resolve().parent
GUEST_HUB_PORT = 8000


class VMError(Exception):
    """The VM could not be built, booted or reached."""


def build_image() -> Path:
    """The cached image directory (built on first use, a few minutes)."""
    out = subprocess.run([str(HERE / "image.sh")], stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        raise VMError(f"tests/vm/image.sh failed with status {out.returncode} (output above)")
    return Path(out.stdout.strip().splitlines()[-1])



class VM:
    """A running qemu guest booted from `image`; use as a context manager."""

    def __init__(self, image: Path, memory_mb: int = 2048, cpus: int = 2,
                 hub_port: int | None = None):
        self.image = Path(image)
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.wanted_hub_port = hub_port
        self.work = Path(tempfile.mkdtemp(prefix="appliance-vm."))
        self.pidfile = self.work / "qemu.pid"
        self.console = self.work / "console.log"
        self.ssh_port = 0
        self.hub_port = 0

    def __enter__(self) -> "VM":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def hub_url(self) -> str:
        """The hub as the host sees it, through the forwarded port."""
        return f"http://127.0.0.1:{self.hub_port}"

    def start(self, boot_timeout: float = 300) -> None:
        """Boot a fresh overlay and wait until root can log in over ssh."""
        overlay = self.work / "disk.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
                        "-b", str(self.image / "disk.img"), str(overlay)], check=True)
        started = time.monotonic()
        self._launch(overlay)
        self._wait_for_ssh(started + boot_timeout)
        print(f"vm: ssh answered {time.monotonic() - started:.0f}s after qemu started "
              f"(ssh port {self.ssh_port}, hub port {self.hub_port})", flush=True)

    def _launch(self, overlay: Path) -> None:
        """Start qemu daemonized; retry with new ports if one was taken meanwhile."""
        for _ in range(3):
            self.ssh_port = free_port()
            self.hub_port = self.wanted_hub_port or free_port()
            out = subprocess.run(self._qemu_argv(overlay), capture_output=True, text=True)
            if out.returncode == 0:
                return
            if "hostfwd" not in out.stderr or self.wanted_hub_port:
                break
        raise VMError(f"qemu failed to start: {out.stderr.strip()}")

    def _qemu_argv(self, overlay: Path) -> list[str]:
        fwd = (f"hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22,"
               f"hostfwd=tcp:127.0.0.1:{self.hub_port}-:{GUEST_HUB_PORT}")
        return [
            "qemu-system-x86_64",
            # TCG: /dev/kvm exists here but guests hang after "Probing EDD".
            "-accel", "tcg,thread=multi", "-m", str(self.memory_mb), "-smp", str(self.cpus),
            "-display", "none", "-serial", f"file:{self.console}",
            "-daemonize", "-pidfile", str(self.pidfile),
            "-kernel", str(self.image / "vmlinuz"), "-initrd", str(self.image / "initrd.img"),
            "-append", "root=/dev/vda rw console=ttyS0",
            "-drive", f"file={overlay},format=qcow2,if=virtio",
            # restrict=on: the guest reaches nothing; only these two ports reach it.
            "-netdev", f"user,id=n0,restrict=on,{fwd}",
            "-device", "virtio-net-pci,netdev=n0",
        ]

    def qemu_pid(self) -> int | None:
        """The pid of our qemu, if it is still running."""
        try:
            pid = int(self.pidfile.read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def console_tail(self, lines: int = 40) -> str:
        """The end of the guest's serial console."""
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "(no console output)"
        return "\n".join(text.splitlines()[-lines:])

    def _wait_for_ssh(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.qemu_pid() is None:
                raise VMError("qemu exited during boot; console tail:\n" + self.console_tail())
            probe = subprocess.run(self._ssh_argv("true", connect_timeout=5),
                                   capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
            if probe.returncode == 0:
                return
            time.sleep(2)
        raise VMError("ssh did not answer in time; console tail:\n" + self.console_tail())

    def _ssh_options(self, connect_timeout: int = 10) -> list[str]:
        return [
            "-i", str(self.image / "id_ed25519"),
            # Every run boots a fresh overlay on a new port: no host key to remember.
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={connect_timeout}",
            # One connection for all commands: a key exchange under TCG costs a second.
            "-o", "ControlMaster=auto", "-o", f"ControlPath={self.work}/ssh.sock",
            "-o", "ControlPersist=600", "-o", "ServerAliveInterval=15",
        ]

    def _ssh_argv(self, command: str, connect_timeout: int = 10) -> list[str]:
        return ["ssh", *self._ssh_options(connect_timeout), "-p", str(self.ssh_port),
                "root@127.0.0.1", command]

    def ssh(self, command: str, check: bool = True, timeout: float = 300,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run a shell command in the guest as root; fail with its output when check."""
        out = subprocess.run(self._ssh_argv(command), input=input, capture_output=True,
                             text=True, timeout=timeout,
                             stdin=None if input is not None else subprocess.DEVNULL)
        if check and out.returncode != 0:
            raise VMError(f"in the VM: {command!r} exited {out.returncode}\n"
                          f"stdout: {out.stdout}\nstderr: {out.stderr}")
        return out

    def copy_in(self, local: Path, remote: str) -> None:
        """Copy a host file into the guest (scp over the same connection)."""
        subprocess.run(["scp", "-q", *self._ssh_options(), "-P", str(self.ssh_port),
                        str(local), f"root@127.0.0.1:{remote}"], check=True, timeout=300)

    def stop(self) -> None:
        """Kill our qemu (by its pidfile) and remove the overlay; safe to call twice."""
        if self.ssh_port:
            subprocess.run(["ssh", *self._ssh_options(), "-p", str(self.ssh_port),
                            "-O", "exit", "root@127.0.0.1"], capture_output=True, timeout=10)
        pid = self.qemu_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if self.qemu_pid() is None:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", str(self.work)], check=False)


def quote(*words: str) -> str:
    """A shell command line from words."""
    return " ".join(shlex.quote(w) for w in words)
