"""The first program of every sandboxed run: builds the run's world, then becomes the
untrusted program with ``execve``.

It runs as a separate interpreter (``python -I -S inside.py SETTINGS``), never imported by
the server, and uses the standard library only (``ctypes`` for the system calls Python
lacks). Its standard input starts with a header line ``<code bytes>\\n`` and the code; what
follows is left unread in the pipe for the program itself.

``namespaces`` mode (inside ``unshare --user --map-root-user`` or, when the server is root,
``unshare`` without a user namespace; either way with new mount, network, pid, IPC and UTS
namespaces): make every mount private, build a new root on a small tmpfs holding read-only
binds of the interpreter's directories and four device nodes, a size-limited tmpfs ``/tmp``
and the program as ``/main.py``; ``pivot_root`` into it and detach the old root (the
server's file system is then not reachable at all, not even by a chroot escape); make the
new root read-only; start a new session; empty the capability bounding set; as root, become
the run's own unprivileged uid; drop every capability; set ``no_new_privs``; apply the
rlimits; close every other descriptor; exec the interpreter with an empty environment.

``rlimits`` mode (the documented weaker mode): only the new session, the private working
directory, the rlimits, the closed descriptors and the empty environment.

A failure before the exec exits with status 125 and says which step failed on stderr.
"""

import ctypes
import json
import os
import platform
import resource
import sys

SETUP_FAILED = 125

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
DEVICES = ("null", "zero", "random", "urandom")

_libc = ctypes.CDLL(None, use_errno=True)
_step = "start"


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source, target, fstype, flags, data=None) -> None:
    encode = lambda value: None if value is None else value.encode()
    _check(
        _libc.mount(encode(source), encode(target), encode(fstype), flags, encode(data)),
        f"mount {target}",
    )


def _kept_flags(path: str) -> int:
    """Flags a remount inside a user namespace must keep (they are locked)."""
    found = os.statvfs(path).f_flag
    flags = 0
    for statvfs_flag, mount_flag in (
        (os.ST_NOSUID, MS_NOSUID),
        (os.ST_NODEV, MS_NODEV),
        (os.ST_NOEXEC, MS_NOEXEC),
    ):
        if found & statvfs_flag:
            flags |= mount_flag
    return flags


def _bind_read_only(source: str, target: str, *, devices: bool = False) -> None:
    _mount(source, target, None, MS_BIND)
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | _kept_flags(source)
    if not devices:
        flags |= MS_NODEV
    _mount(None, target, None, flags)


def _read_code() -> bytes:
    header = b""
    while not header.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte or len(header) > 20:
            raise ValueError("no code header on stdin")
        header += byte
    size = int(header)
    code = b""
    while len(code) < size:
        chunk = os.read(0, size - len(code))
        if not chunk:
            raise ValueError("stdin ended inside the code")
        code += chunk
    return code


def _build_root(settings: dict, code: bytes) -> None:
    global _step
    root = settings["root"]
    _step = "private mounts"
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _step = "root tmpfs"
    size = len(code) + (1 << 20)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=0755")
    _step = "read-only binds"
    for path in settings["binds"]:
        inner = root + path
        if os.path.islink(path):
            os.makedirs(os.path.dirname(inner), exist_ok=True)
            os.symlink(os.readlink(path), inner)
        elif os.path.isdir(path):
            os.makedirs(inner, exist_ok=True)
            _bind_read_only(path, inner)
    _step = "device nodes"
    os.makedirs(root + "/dev", exist_ok=True)
    for name in DEVICES:
        with open(f"{root}/dev/{name}", "w"):
            pass
        _bind_read_only(f"/dev/{name}", f"{root}/dev/{name}", devices=True)
    _step = "/tmp tmpfs"
    os.makedirs(root + "/tmp")
    _mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, settings["tmp_options"])
    with open(root + "/main.py", "wb") as handle:
        handle.write(code)
    _step = "pivot_root"
    os.chdir(root)
    number = SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(f"pivot_root: no system call number known for {platform.machine()}")
    # new root and old root the same directory: the old root ends up stacked under the new
    # one and is detached at once, without a directory for it
    _check(_libc.syscall(number, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "detach the old root")
    os.chdir("/")
    _step = "read-only root"
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _drop_privileges(uid: int | None) -> None:
    global _step
    _step = "capability bounding set"
    for capability in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            if ctypes.get_errno() == 22 and capability > 0:  # EINVAL: past the last capability
                break
            _check(-1, f"drop capability {capability} from the bounding set")
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # absent before Linux 4.3
    if uid is not None:
        _step = "unprivileged uid"
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        # cleared by the credential change; killed with the runner from here on
        _check(_libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0), "parent-death signal")
    _step = "capabilities"
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: empty (two words each)
    _check(_libc.capset(header, data), "capset")
    _step = "no_new_privs"
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def _limit(settings: dict) -> None:
    global _step
    _step = "rlimits"
    limits = settings["rlimits"]
    cpu = limits["cpu"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU, then SIGKILL
    for name in ("AS", "NPROC", "NOFILE", "FSIZE", "CORE"):
        value = limits[name.lower()]
        resource.setrlimit(getattr(resource, f"RLIMIT_{name}"), (value, value))


def _become_program(settings: dict) -> None:
    """In the child (pid 1 of the new pid namespace): the session, the identity, the
    limits, then the program."""
    global _step
    os.setsid()
    os.close(settings["status_fd"])
    if settings["mode"] == "namespaces":
        uid = settings.get("uid")
        if uid is not None:
            _limit(settings)  # before the uid change: NPROC counts from there
            _drop_privileges(uid)
        else:
            _check(_libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0), "parent-death signal")
            _drop_privileges(None)
            _limit(settings)
        program = "/main.py"
    else:
        _check(_libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0), "parent-death signal")
        _limit(settings)
        program = os.path.join(settings["root"], "main.py")
    _step = "exec"
    os.closerange(3, 1 << 16)  # the runner passes only the status pipe
    python = settings["python"]
    os.execve(python, [python, "-I", "-S", "-B", "-X", "utf8", program], {})


def main() -> None:
    global _step
    settings = json.loads(sys.argv[1])
    _step = "read code"
    code = _read_code()
    if settings["mode"] == "namespaces":
        _build_root(settings, code)
    else:
        _step = "working directory"
        os.chdir(settings["root"])
        with open("main.py", "wb") as handle:
            handle.write(code)
    _step = "fork"
    child = os.fork()
    if child == 0:
        try:
            _become_program(settings)
        except BaseException as error:
            os.write(2, f"sandbox setup failed at {_step}: {error}\n".encode())
        os._exit(SETUP_FAILED)
    # the parent waits outside the pid namespace and tells the runner how the program ended:
    # once pid 1 has been reaped, the kernel has killed every other process of the namespace
    _, status = os.waitpid(child, 0)
    os.write(settings["status_fd"], f"{status}\n".encode())


if __name__ == "__main__":
    try:
        main()
    except BaseException as error:  # the runner reads this line as the reason
        os.write(2, f"sandbox setup failed at {_step}: {error}\n".encode())
        os._exit(SETUP_FAILED)
