"""Services above the session layer: the contact book and the call policy.

::

    with ContactBook("node1") as book:
        book.add("hl...", "bob")
        book.set_status("dnd")
    policy = CallPolicy(book)
    policy.admit(caller_pubkey)      # 'accepted', or why not ('blocked', 'busy', ...)
"""

from .contacts import Contact, ContactBook, ContactState, Status, check_name
from .policy import CallPolicy, Verdict

__all__ = [
    "CallPolicy",
    "Contact",
    "ContactBook",
    "ContactState",
    "Status",
    "Verdict",
    "check_name",
]
