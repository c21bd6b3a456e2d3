"""`python own_session.py PROGRAM [ARGS...]`: run PROGRAM in a session of its own, and end it when the process that
started it ends. The job starts Beam's Flink job server through it (pipeline.job_control), for two reasons:

- In the launcher's session, a Ctrl-C at the terminal or a SIGTERM to the launcher's process group (`kill -- -PGID`,
  `timeout`, a service manager) reached the job server too: it stopped at once, and with it the embedded Flink
  cluster and the job, so a --watch failed with a gRPC error (exit 4) instead of draining. In a session of its own
  only the launcher gets those signals; it stops the job server itself (Beam does at exit, the job on a cancel).
- A launcher killed outright (SIGKILL, out of memory) cannot stop it: on Linux the kernel then sends the job server
  SIGTERM (PR_SET_PDEATHSIG), so no job server, nor the embedded cluster in it, is left running alone.

It is run as a file, not as a module of the package, so that nothing but the standard library is imported before
PROGRAM replaces it (same process id: stopping it stops PROGRAM).
"""
import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _end_with(parent):
    """Have the kernel send this process (and PROGRAM, which keeps it across exec) SIGTERM when `parent` ends.
    Linux only; elsewhere PROGRAM outlives a launcher that is killed outright, as any child does."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent ended before the request: nothing would signal us
        sys.exit(1)


def main(argv):
    """Start a new session, ask to end with the parent, and become PROGRAM (argv)."""
    parent = os.getppid()
    if hasattr(os, "setsid"):
        os.setsid()
    _end_with(parent)
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as subprocess leaves it for a child; Python ignores it
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
