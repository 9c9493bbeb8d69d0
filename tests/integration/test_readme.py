"""Issue 10, acceptance item 4: the README's netcat example, run as
written (only the port changed to a test daemon's), prints what the
README says it prints. ``tools/setup`` installs Debian's netcat-openbsd."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path


from .proto_support import start_daemon

README = Path(__file__).resolve().parents[2] / "README.md"


def example() -> tuple[str, str]:
    """The ``$ printf ... | nc ...`` command and the lines after it."""
    block = re.search(r"```sh\n\$ (printf .*? nc .*?)\n(.*?)```",
                      README.read_text(), re.S)
    return block.group(1), block.group(2)


def test_readme_netcat_example(tmp_path):
    command, expected = example()
    daemon = start_daemon(tmp_path)
    try:
        out = subprocess.run(["bash", "-c", command.replace(
            "11211", str(daemon.port))], capture_output=True, timeout=30)
    finally:
        daemon.kill()
    assert out.stdout.decode().replace("\r\n", "\n") == expected
