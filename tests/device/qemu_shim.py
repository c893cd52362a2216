"""Run a command (qemu-user) with two of the host's system calls answering an error, where
qemu 7.2 (Debian bookworm's qemu-user-static) passes the guest's path to the host without
its ``-L`` prefix, so that a trixie guest finds its own files:

- ``statx`` answers ENOSYS: trixie's glibc 2.41 stats with it on armhf; qemu then falls back to
  ``fstatat`` on the prefixed path, which finds them.
- ``listxattr``/``llistxattr`` answer ENOTSUP (a file system without extended attributes), which
  ``shutil.copy2`` (``python -m venv``) skips, instead of ENOENT, which it raises.

A seccomp filter, inherited by every process the command starts, does that:
``python qemu_shim.py COMMAND ARGS...``.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys

_AUDIT_ARCH_X86_64 = 0xC000003E
_ENOSYS, _ENOTSUP = 38, 95
_ANSWERS = {332: _ENOSYS, 194: _ENOTSUP, 195: _ENOTSUP}  # x86_64: statx, listxattr, llistxattr
_LD_ABS_W, _JEQ_K, _RET_K = 0x20, 0x15, 0x06
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2


def _program() -> list[tuple[int, int, int, int]]:
    """seccomp_data holds the syscall number at offset 0 and the audit arch at 4."""
    checks: list[tuple[int, int, int, int]] = []
    for number, errno in _ANSWERS.items():
        checks += [(_JEQ_K, 0, 1, number), (_RET_K, 0, 0, _RET_ERRNO | errno)]
    skip = len(checks) + 1  # another ABI: over the checks to the final allow
    return [
        (_LD_ABS_W, 0, 0, 4),
        (_JEQ_K, 0, skip, _AUDIT_ARCH_X86_64),
        (_LD_ABS_W, 0, 0, 0),
        *checks,
        (_RET_K, 0, 0, _RET_ALLOW),
    ]


def _install_filter() -> None:
    program = _program()
    code = b"".join(struct.pack("HBBI", *op) for op in program)
    filters = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HxxxxxxP", len(program), ctypes.addressof(filters))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.create_string_buffer(fprog), 0,
                  0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


if __name__ == "__main__":
    _install_filter()
    os.execv(sys.argv[1], sys.argv[1:])
