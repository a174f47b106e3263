"""`make demo`: boot a VM with the .deb installed and demo users, print the URL, wait for Ctrl-C.

Usage: python3 -m tests.vm.demo [path/to/notebook-appliance_VERSION_all.deb]
(default: the newest .deb in build/). Needs root, qemu and debootstrap (`make deps`).
"""

import signal
import socket
import sys
import time
from pathlib import Path

from tests.vm.vm import VM, VMError, build_image

REPO = Path(__file__).resolve().parents[2]
USERS = {"student1": "student1-demo", "student2": "student2-demo"}
INSTRUCTOR = ("teacher", "teacher-demo")


def port_free(port: int) -> bool:
    """True when nothing on this host listens on 127.0.0.1:port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def newest_deb() -> Path:
    """The most recently built package in build/."""
    debs = sorted((REPO / "build").glob("notebook-appliance_*_all.deb"),
                  key=lambda p: p.stat().st_mtime)
    if not debs:
        sys.exit("demo: no build/notebook-appliance_*_all.deb; run 'make deb' first")
    return debs[-1]


def set_up(vm: VM, deb: Path) -> None:
    """Install the package as a sysadmin would, then make the demo accounts and shared data."""
    vm.copy_in(deb, "/root/")
    print(f"demo: apt install ./{deb.name} inside the VM", flush=True)
    vm.ssh(f"cd /root && DEBIAN_FRONTEND=noninteractive apt install -y ./{deb.name}",
           timeout=900)
    for name, password in [*USERS.items(), INSTRUCTOR]:
        vm.ssh(f"useradd -m -s /bin/bash {name}")
        vm.ssh("chpasswd", input=f"{name}:{password}\n")
    vm.ssh(f"usermod -aG notebook-instructors {INSTRUCTOR[0]}")
    vm.ssh(f"sudo -u {INSTRUCTOR[0]} sh -c "
           "'echo \"Welcome! Course data lives here.\" > /srv/data/README.txt'")


def stop_on_signal(signum, frame) -> None:
    """Turn a TERM into the same orderly stop as Ctrl-C."""
    raise KeyboardInterrupt


def main() -> int:
    """Boot, install, print how to log in, and keep the VM up until Ctrl-C."""
    deb = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else newest_deb()
    # Ctrl-C, or a TERM from whoever started us, stops the VM on the way out (even when the
    # shell that started us in the background set SIGINT to ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, stop_on_signal)
    print("demo: building or reusing the VM image (first time: a few minutes)", flush=True)
    try:
        with VM(build_image(), hub_port=8000 if port_free(8000) else None) as vm:
            set_up(vm, deb)
            print(f"\nnotebook-appliance {deb.name} is running in a VM.\n"
                  f"  Open  http://127.0.0.1:{vm.hub_port}/\n  Logins:")
            for name, password in [*USERS.items(), INSTRUCTOR]:
                print(f"    {name:10} {password}")
            print(f"  Shell in the VM: ssh -i {vm.image}/id_ed25519 -p {vm.ssh_port} "
                  "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@127.0.0.1\n"
                  "  (a notebook server takes 10-25 s to start: the VM is emulated)\n"
                  "Press Ctrl-C to stop the VM.", flush=True)
            while vm.qemu_pid() is not None:
                time.sleep(1)
            print("demo: the VM exited", file=sys.stderr)
            return 1
    except VMError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo: stopping the VM")
        return 0


if __name__ == "__main__":
    sys.exit(main())
