#!/usr/bin/env python3
"""The kernel's part of deleting N pods, without podnetd: the reference
beside scale.delete_all_s_at_N (scripts/bench-scale.sh).

N processes, each in its own network, mount (a slave copy of the host's) and
UTS namespace with a TUN `eth0` it holds, the network namespace pinned by a
bind mount, as podnetd makes a pod. Timed: SIGKILL to all, reaping them, then
unpinning their namespaces: what any runtime has to have the kernel do to
delete them, with nothing else (no API, no store, no watch). Repeated RUNS
times, made anew each time.

Usage: kernel_delete_ref.py N RUNS   (root); prints
  scale.kernel_delete_all_s_at_N: MEDIAN
and each run's times on stderr. Every process and mount it made is gone when
it returns, also after an error; its children die with it.
"""
import ctypes
import fcntl
import os
import signal
import statistics
import struct
import sys
import time

CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWUTS = 0x40000000, 0x00020000, 0x04000000
MS_BIND, MS_REC, MS_SLAVE, MS_PRIVATE, MNT_DETACH = 4096, 16384, 1 << 19, 1 << 18, 2
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000
PR_SET_PDEATHSIG = 1

libc = ctypes.CDLL(None, use_errno=True)


def check(rc, what):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def pod(pins_dir, ready):
    """The child: its own namespaces and eth0, then waits to be killed."""
    check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
    check(libc.unshare(CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWUTS), "unshare")
    check(libc.mount(None, b"/", None, MS_REC | MS_SLAVE, None), "mount / slave")
    # As a pod's: no copy of the other pods' pins.
    libc.umount2(pins_dir.encode(), MNT_DETACH)
    tun = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", b"eth0", IFF_TUN | IFF_NO_PI))
    os.write(ready, b"x")
    os.close(ready)
    while True:
        signal.pause()


def one_run(n, pins_dir):
    pids, pins = [], []
    try:
        for i in range(n):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(r)
                    pod(pins_dir, w)
                finally:
                    os._exit(1)
            os.close(w)
            ok = os.read(r, 1)
            os.close(r)
            pids.append(pid)
            if not ok:
                raise RuntimeError("a pod process could not make its namespaces")
            pin = f"{pins_dir}/{i}"
            open(pin, "w").close()
            pins.append(pin)
            check(libc.mount(f"/proc/{pid}/ns/net".encode(), pin.encode(), None, MS_BIND, None), "pin")
        time.sleep(2)  # settle, as the daemon's benchmark does
        t0 = time.monotonic()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for pid in pids:
            os.waitpid(pid, 0)
        reaped = time.monotonic()
        pids = []
        for pin in pins:
            libc.umount2(pin.encode(), MNT_DETACH)
            os.unlink(pin)
        pins = []
        t1 = time.monotonic()
        print(f"# kernel delete of {n}: {t1 - t0:.3f} s (kill and reap {reaped - t0:.3f}, unpin {t1 - reaped:.3f})",
              file=sys.stderr, flush=True)
        return t1 - t0
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        for pin in pins:
            libc.umount2(pin.encode(), MNT_DETACH)
            try:
                os.unlink(pin)
            except OSError:
                pass


def main():
    n, runs = int(sys.argv[1]), int(sys.argv[2])
    pins_dir = f"/run/podnet-kernel-ref.{os.getpid()}"
    os.makedirs(pins_dir)
    try:
        # A private mount point of its own: pins never propagate anywhere.
        check(libc.mount(pins_dir.encode(), pins_dir.encode(), None, MS_BIND, None), "bind")
        check(libc.mount(None, pins_dir.encode(), None, MS_PRIVATE, None), "private")
        times = [one_run(n, pins_dir) for _ in range(runs)]
        print(f"scale.kernel_delete_all_s_at_{n}: {statistics.median(times):.3f}", flush=True)
    finally:
        libc.umount2(pins_dir.encode(), MNT_DETACH)
        for f in os.listdir(pins_dir):
            os.unlink(f"{pins_dir}/{f}")
        os.rmdir(pins_dir)


if __name__ == "__main__":
    main()
