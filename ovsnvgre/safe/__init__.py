"""Safe apply: nothing a run does may leave a host cut off or stuck.

    journal.py   the rollback file: the state before a run, saved before its first change
    snapshot.py  that state as data, and the changes that bring it back
    restore.py   carry those changes out (OVSDB, kernel, flows)
    verify.py    what must still answer after the underlay moved, and the check itself
    probe.py     ARP and ICMP echo on raw sockets (frames from family.py)
    timer.py     the detached process behind `up --confirm`
    rollback.py  `confirm`, `rollback`, and starting and awaiting the timer
"""
