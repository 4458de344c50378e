"""The Streamlit entry point (`assay app` runs it): page set-up, the login gate, the navigation.

Every page is a thin script under this folder; the work is done by library calls the CLI also makes.
"""

from __future__ import annotations

import streamlit as st

from assay.app.ui import auth
from assay.app.ui.common import get_store

st.set_page_config(page_title="Assay", page_icon=":material/science:", layout="wide")

store = get_store()
# None in open local mode (a workspace without users); otherwise the logged-in user, or the gate
# shows its login form and stops this run
user = auth.gate(store)

annotate = st.Page("page_annotate.py", title="Annotate", icon=":material/edit_note:", url_path="annotate")
if user is not None and getattr(user, "role", None) == "annotator":
    pages = [annotate]  # annotators label records; the rest of the workbench is not theirs
else:
    pages = [
        st.Page("page_datasets.py", title="Datasets & versions", icon=":material/folder_open:", url_path="datasets",
                default=True),
        st.Page("page_review.py", title="Review", icon=":material/search:", url_path="review"),
        st.Page("page_generate.py", title="Generate", icon=":material/auto_awesome:", url_path="generate"),
        st.Page("page_audit.py", title="Audit", icon=":material/fact_check:", url_path="audit"),
        st.Page("page_train.py", title="Train & compare", icon=":material/model_training:", url_path="train"),
        annotate,
    ]
st.navigation(pages).run()
