"""The login gate. A workspace without users is a single-user local tool (open mode: no login);
once it has users, a browser session sees nothing but the login form until someone logs in.

The logged-in user's name lives in this browser session's state only; every run looks the user up
in the catalog again, so a removed user is logged out and a changed role applies at once. Roles are
enforced by the library (`assay.core.annotation`), not by what the pages choose to show.
"""

from __future__ import annotations

import re

import streamlit as st

from assay.core import annotation

USER_KEY = "assay_user"


def gate(store):
    """Return the logged-in user, or None in open local mode (no users in the workspace).
    Shows the login form and stops the script when the workspace has users and nobody is logged in."""
    if not annotation.has_users(store):
        st.session_state.pop(USER_KEY, None)
        return None
    name = st.session_state.get(USER_KEY)
    user = annotation.get_user(store, name) if name else None
    if user is None:
        st.session_state.pop(USER_KEY, None)
        _login_form(store)
        st.stop()
    with st.sidebar:
        st.caption(f"Logged in as {md_text(user.name)} ({user.role})")
        st.button("Log out", key="assay_logout", on_click=logout)
    return user


def current_user(store):
    """The logged-in user for a page script (None in open mode); pages call it after the gate ran."""
    name = st.session_state.get(USER_KEY)
    return annotation.get_user(store, name) if name else None


def md_text(text) -> str:
    """Text for a markdown element (st.caption, st.info, ...), every markdown character escaped, so
    a name like `a_b_` or `[x](y)` shows as typed."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$])", r"\\\1", str(text))


def logout() -> None:
    st.session_state.pop(USER_KEY, None)


def _login_form(store) -> None:
    st.title("Assay")
    st.subheader("Log in")
    with st.form("assay_login"):
        name = st.text_input("User name", key="login_name")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        user = annotation.authenticate(store, name, password)
        if user is None:
            st.error("Wrong user name or password.")
        else:
            st.session_state[USER_KEY] = user.name
            st.rerun()
