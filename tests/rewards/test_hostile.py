"""Hostile programs (processes, memory, files, secrets, network): each one is contained.

For every case (see ``conftest.contained``): the verdict is not a pass (a case prints PWNED only when its
attack worked, and PWNED is the expected answer, so a leak or an escape would show up as a pass); the same
Sandbox then passes a correct program of each kind; nothing on the host changed (sentinel file, repository,
home), no process outlived its test, the host's loopback listener saw no connection, a host process is alive.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest

from crlab.rewards import Verdict

W, RE, TO, ME = (Verdict.WRONG_ANSWER, Verdict.RUNTIME_ERROR, Verdict.TIMEOUT, Verdict.MEMORY_EXCEEDED)


class Case(NamedTuple):
    name: str
    program: str  # string.Template: $sentinel $sentinel_dir $repo $home $port $marker $secrets
    spec: str = "pwned"  # a key of conftest.HOSTILE_SPECS
    allowed: frozenset = frozenset({W, RE, TO, ME})  # any non-pass verdict unless narrowed
    repeat: int = 1


DAEMON = "[sys.executable, '-c', 'import time; time.sleep(60)', '$marker']"
CASES = [
    # fork bomb: every process forks forever (RLIMIT_NPROC and the sweep stop it)
    Case(
        "fork-bomb",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        allowed=frozenset({TO, RE}),
    ),
    # fork bomb through subprocess, each child marked, none may survive
    Case(
        "subprocess-bomb",
        f"import subprocess, sys\nwhile True:\n    try:\n        subprocess.Popen({DAEMON})\n    except OSError:\n        pass",
        allowed=frozenset({TO, RE}),
    ),
    # memory bomb: growing list (a slow, loaded machine may hit the wall clock first)
    Case("memory-bomb", "x = []\nwhile True:\n    x.append(' ' * 10**7)", allowed=frozenset({ME, TO})),
    # memory bomb: one huge allocation through mmap
    Case(
        "mmap-bomb",
        "import mmap\nm = mmap.mmap(-1, 16 << 30)\nm[-1] = 1\nprint('PWNED')",
        allowed=frozenset({RE, ME}),
    ),
    # infinite loop
    Case("infinite-loop", "while True:\n    pass", allowed=frozenset({TO})),
    # a loop that ignores SIGTERM, SIGINT, SIGHUP and SIGXCPU
    Case(
        "ignore-signals",
        "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):\n    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass",
        allowed=frozenset({TO}),
    ),
    # stops itself (SIGSTOP): still killed at the wall clock
    Case(
        "sigstop-self",
        "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)\nprint('PWNED')",
        allowed=frozenset({TO}),
    ),
    # huge stdout
    Case(
        "huge-output",
        "import sys\nwhile True:\n    sys.stdout.write('PWNED\\n' * 10000)",
        allowed=frozenset({RE}),
    ),
    # huge stderr
    Case("huge-stderr", "import sys\nwhile True:\n    sys.stderr.write('x' * 65536)"),
    # fill the private tmp with files
    Case(
        "fill-tmp",
        "import os\ni = 0\nwhile True:\n    open(f'/tmp/f{i}', 'w').write('x' * 60000)\n    i += 1",
    ),
    # write and delete outside its directory: sentinel, repository, home, system dirs
    Case(
        "write-outside",
        "import os\nhits = []\nfor p in ['$sentinel', '$repo/PWNED_BY_SANDBOX', '$home/PWNED_BY_SANDBOX', '/root/PWNED_BY_SANDBOX', '/usr/PWNED_BY_SANDBOX', '/PWNED_BY_SANDBOX']:\n"
        "    try:\n        open(p, 'w').write('pwned')\n        hits.append(p)\n    except OSError:\n        pass\n"
        "for p in ['$sentinel']:\n    try:\n        os.remove(p)\n        hits.append(p)\n    except OSError:\n        pass\n"
        "print('PWNED' if hits else 'safe')",
    ),
    # delete a whole host directory
    Case(
        "rmtree-outside",
        "import shutil, os\nshutil.rmtree('$sentinel_dir', ignore_errors=True)\nprint('safe' if not os.path.exists('$sentinel_dir') else 'PWNED')",
    ),
    # read a host file
    Case(
        "read-sentinel",
        "print(open('$sentinel').read())",
        spec="sentinel",
    ),
    # read the repository
    Case(
        "read-repo",
        "import os\nprint('PWNED' if os.path.exists('$repo/pyproject.toml') or os.path.exists('$repo') else 'safe')",
    ),
    # environment secrets
    Case(
        "env-secrets",
        "import os\nblob = repr(dict(os.environ))\nprint('PWNED' if any(s in blob for s in $secrets) else 'safe')",
    ),
    # secrets in any visible process's environ or cmdline
    Case(
        "proc-environ",
        "import os\nblob = ''\nfor pid in os.listdir('/proc'):\n    for f in ('environ', 'cmdline'):\n        try:\n            blob += open(f'/proc/{pid}/{f}', 'rb').read().decode('latin-1')\n        except (OSError, ValueError):\n            pass\n"
        "print('PWNED' if any(s in blob for s in $secrets) else 'safe')",
    ),
    # ~/.netrc: the sandbox HOME, the host HOME and /root
    Case(
        "netrc",
        "import os\nfound = []\nfor p in [os.path.expanduser('~/.netrc'), '$home/.netrc', '/root/.netrc']:\n    try:\n        found.append(open(p).read())\n    except OSError:\n        pass\nprint('PWNED' if found else 'safe')",
    ),
    # socket to the outside world
    Case(
        "socket-outside",
        "import socket\nfor addr in [('1.1.1.1', 80), ('8.8.8.8', 53)]:\n    try:\n        socket.create_connection(addr, timeout=0.3)\n        print('PWNED')\n        break\n    except OSError:\n        pass\nelse:\n    print('safe')",
    ),
    # socket to a service listening on the host's loopback
    Case(
        "socket-host-loopback",
        "import socket\ntry:\n    s = socket.create_connection(('127.0.0.1', $port), timeout=0.3)\n    s.sendall(b'pwned')\n    print('PWNED')\nexcept OSError:\n    print('safe')",
    ),
    # kill its parent (the fork server)
    Case(
        "kill-parent",
        "import os, signal\ntry:\n    os.kill(os.getppid(), signal.SIGKILL)\n    print('PWNED')\nexcept OSError:\n    print('safe')",
    ),
    # kill every process it may signal
    Case(
        "kill-all",
        "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\nprint('safe')",
    ),
    # kill through the shell: kill -1, pkill by name
    Case(
        "kill-shell",
        "import os\nos.system('kill -9 -1; pkill -9 -f pytest; pkill -9 sleep; kill -9 1')\nprint('safe')",
    ),
    # look for host processes in /proc
    Case(
        "proc-other-processes",
        "import os\nseen = []\nfor pid in filter(str.isdigit, os.listdir('/proc')):\n    try:\n        seen.append(open(f'/proc/{pid}/cmdline', 'rb').read())\n    except OSError:\n        pass\nprint('PWNED' if any(b'pytest' in c or b'611.5' in c for c in seen) else 'safe')",
    ),
    # read the fork server's memory
    Case(
        "ptrace-server",
        "import os\ntry:\n    with open(f'/proc/{os.getppid()}/mem', 'rb') as f:\n        f.seek(0x400000)\n        f.read(16)\n    print('PWNED')\nexcept OSError:\n    print('safe')",
    ),
    # become root again
    Case(
        "setuid-root",
        "import os\nfor f in (lambda: os.setuid(0), lambda: os.system('su -c true'), lambda: os.setgroups([0])):\n    try:\n        f()\n    except OSError:\n        pass\nprint('PWNED' if os.geteuid() == 0 or os.getuid() == 0 else 'safe')",
    ),
    # double-forked daemon in its own session
    Case(
        "double-fork-daemon",
        f"import os, sys\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        os.execv(sys.executable, {DAEMON})\n    os._exit(0)\nprint('safe')",
    ),
    # subprocess daemon in a new session, parent exits at once
    Case(
        "subprocess-daemon",
        f"import subprocess, sys\nsubprocess.Popen({DAEMON}, start_new_session=True, stdout=subprocess.DEVNULL)\nprint('safe')",
    ),
    # a file left in /tmp must not be there for the next program
    Case(
        "persist-tmp",
        "import os\nhit = os.path.exists('/tmp/persist') or os.path.exists(os.path.expanduser('~/persist'))\nopen('/tmp/persist', 'w').write('x')\nopen(os.path.expanduser('~/persist'), 'w').write('x')\nprint('PWNED' if hit else 'safe')",
        repeat=2,
    ),
    # exhaust file descriptors
    Case("fd-exhaustion", "fs = []\nwhile True:\n    fs.append(open('/dev/null'))"),
    # thread bomb
    Case(
        "thread-bomb",
        "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_program_is_contained(contained, case):
    contained(case.program, case.spec, case.allowed, case.repeat)


def test_there_are_enough_hostile_cases():
    assert len(CASES) >= 25
