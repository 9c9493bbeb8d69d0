"""Least privilege: ``-u USER`` and the audit log's path.

How this works: as memcached, a daemon started as root refuses to run
without ``-u`` ("can't run as root without the -u switch", exit 64; ``-u
root`` keeps root on purpose). With ``-u USER`` the daemon does what needs
root first (bind the listeners, including ports below 1024; read the TLS
key; open the audit log; create the data directory), then ``become``
hands what root created for the daemon to the user (the data directory,
LMDB's files and the UNIX socket, when root owns them; modes stay 0700 /
0600 / ``-a``), drops every supplementary group and sets the group and
user ids. From then on the process cannot regain root. Started as another
user, ``-u`` is ignored, as memcached ignores it.

``check_audit_path`` refuses an audit log file that others could tamper
with: a symlink (whoever can write its directory can point the daemon's
appends, made as root, at any file), a file that is group- or
other-writable (anyone in that group could forge or erase audit lines),
or one in a group- or other-writable directory (they could replace it).
"""

from __future__ import annotations

import logging
import os
import pwd
import stat

from ..security.audit import SINKS

log = logging.getLogger("securecache")

EX_USAGE = 64          # memcached's statuses (sysexits.h)
EX_NOUSER = 67
EX_OSERR = 71


class PrivilegeError(Exception):
    """The daemon cannot take the identity it was told to; the message is
    memcached's, ``status`` its exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def root_refusal(user: str | None) -> str | None:
    """memcached's refusal to run as root without -u, or None."""
    if os.geteuid() == 0 and not user:
        return "can't run as root without the -u switch"
    return None


def lookup(user: str | None) -> pwd.struct_passwd | None:
    """The account to become, or None when there is nothing to do (not
    root, or no -u); PrivilegeError for an unknown user."""
    if not user or os.geteuid() != 0:
        if user:
            log.info("-u %s: not started as root, running as uid %d",
                     user, os.geteuid())
        return None
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"can't find the user {user} to switch to",
                             EX_NOUSER) from None


def become(account: pwd.struct_passwd | None, data_dir: str,
           unix_path: str | None) -> None:
    """Hand root's files to ``account``, then take its identity (see the
    module doc); nothing when ``account`` is None."""
    if account is None:
        return
    if account.pw_uid != 0:
        for path in _owned_paths(data_dir, unix_path):
            _hand_over(path, account)
    try:
        os.setgroups([])
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)
    except OSError as error:
        raise PrivilegeError(f"failed to assume identity of user "
                             f"{account.pw_name}: {error}", EX_OSERR) from None
    log.info("running as user %s (uid %d, gid %d)", account.pw_name,
             account.pw_uid, account.pw_gid)


LMDB_FILES = ("data.mdb", "lock.mdb")


def _owned_paths(data_dir: str, unix_path: str | None) -> list[str]:
    """The data directory, LMDB's files in it and the UNIX socket."""
    paths = [data_dir] + [os.path.join(data_dir, name) for name in LMDB_FILES]
    return paths + ([unix_path] if unix_path else [])


def _hand_over(path: str, account: pwd.struct_passwd) -> None:
    """chown ``path`` to the account when root owns it; the mode bits are
    kept. Only a directory, a socket or a file with one link: never a
    symlink's target, nor a hard link to some other file of root's."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    kind = stat.S_IFMT(st.st_mode)
    single = kind in (stat.S_IFDIR, stat.S_IFSOCK) or \
        (kind == stat.S_IFREG and st.st_nlink == 1)
    if st.st_uid == 0 and single:
        os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)


def check_audit_path(target: str) -> str | None:
    """Why a file audit log at ``target`` is unsafe, or None (see the
    module doc); stderr, syslog and none are not files."""
    if target in SINKS:                 # the words audit.py opens as sinks
        return None
    path = os.path.abspath(target)
    directory = os.path.dirname(path)
    if _writable_by_others(directory):
        return (f"audit log {target}: its directory {directory} is group- "
                "or other-writable; others could replace the log")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None                     # created when the audit log opens
    if stat.S_ISLNK(st.st_mode):
        return (f"audit log {target} is a symlink; whoever can change it "
                "points the daemon's appends at any file: give the real path")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (f"audit log {target} is group- or other-writable; others "
                "could forge or erase audit lines (chmod go-w)")
    return None


def _writable_by_others(directory: str) -> bool:
    try:
        mode = os.stat(directory).st_mode
    except FileNotFoundError:
        return False                    # opening the log reports it
    return bool(mode & (stat.S_IWGRP | stat.S_IWOTH))
