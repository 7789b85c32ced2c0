"""The Drawings page's gallery tab: a set's drawings filtered by label, verdict and confidence, with relabelling,
deleting and putting a deleted drawing back (dashboard/app_pages/drawings.py draws it)."""
from __future__ import annotations

import re

import streamlit as st

from core.data.drawing_sets import DrawingSet
from core.errors import DigitLabError
from dashboard import state, widgets

PER_PAGE = 40  # drawings in one page of the gallery


def caption(d) -> str:
    """A drawing under its thumbnail: id, true label, and ✓ or ✗ (with what the model said)."""
    if d.verdict is None:
        return f"#{d.id} · {d.label}"
    if d.verdict.predicted == d.label:
        return f"#{d.id} · {d.label} ✓"
    return f"#{d.id} · {d.label} ✗ said {d.verdict.predicted}"


def gallery_tab(current: DrawingSet) -> None:
    sets = state.drawing_store()
    f1, f2, f3, f4 = st.columns([1, 1, 1, 2])
    any_digit = [None, *range(10)]
    label = f1.selectbox("True label", any_digit, format_func=lambda v: "any" if v is None else str(v),
                         key="drawings_f_label")
    said = f2.selectbox("Model said", any_digit, format_func=lambda v: "any" if v is None else str(v),
                        key="drawings_f_said")
    verdict = f3.selectbox("Verdict", ["any", "right ✓", "wrong ✗", "no verdict"], key="drawings_f_verdict")
    low, high = f4.slider("Confidence when saved", 0.0, 1.0, (0.0, 1.0), 0.05, key="drawings_f_conf")
    ranged = low > 0 or high < 1  # a range drops drawings saved without a verdict
    undo_delete(current)
    found = sets.drawings(current.id, label=label, predicted=said, min_confidence=low if ranged else None,
                          max_confidence=high if ranged else None)
    keep = {"right ✓": lambda d: d.verdict is not None and d.verdict.predicted == d.label,
            "wrong ✗": lambda d: d.verdict is not None and d.verdict.predicted != d.label,
            "no verdict": lambda d: d.verdict is None}.get(verdict)
    found = [d for d in found if keep is None or keep(d)]
    if not found:
        st.info("No drawings match these filters." if current.count else
                "This set is empty: save drawings from Draw & predict, or import a zip.", icon=":material/filter_alt:")
        return
    pages = (len(found) - 1) // PER_PAGE + 1
    page = 1
    if pages > 1:
        page = int(st.number_input(f"Page (of {pages})", 1, pages, 1, key="drawings_page"))
    shown = found[(page - 1) * PER_PAGE: page * PER_PAGE]
    matching = (f"All {len(found):,} drawing{'' if len(found) == 1 else 's'}" if len(found) == current.count else
                f"{len(found):,} of {current.count:,} drawings match")
    st.caption(f"{matching}, oldest first; ✓ the model that read it when it "
               "was saved was right, ✗ wrong.")
    widgets.image_row([d.model_input for d in shown], [caption(d) for d in shown], width=64)
    edit_drawing(shown)


def drawer(d) -> str:
    """Who drew it, as a person reads it: their name if they gave one, "you", or where it came from."""
    if d.drawer_name:
        return d.drawer_name
    if d.drawer == state.visitor_id():
        return "you"
    if re.fullmatch(r"[0-9a-f]{16}", d.drawer):  # a browser session's id: each reload is a new one
        return "another visitor" if state.policy().shared else "someone at the canvas (no name given)"
    return d.drawer or "unknown"


def edit_drawing(shown) -> None:
    """Relabel or delete one drawing of those shown (the drawer's own, or any for the admin)."""
    sets = state.drawing_store()
    by_id = {d.id: d for d in shown}
    labels = {d.id: caption(d) for d in shown}
    box = widgets.changing_key("drawings_pick", labels.values())
    if box not in st.session_state and st.session_state.get("drawings_picked") in by_id:
        st.session_state[box] = st.session_state["drawings_picked"]  # relabelled: still the same drawing
    st.divider()
    pick, detail, edit = st.columns([2, 1, 2])
    chosen = pick.selectbox("Drawing to correct or delete", list(by_id), key=box, format_func=labels.get)
    st.session_state["drawings_picked"] = chosen
    d = by_id[chosen]
    detail.image(sets.canvas_png(d.id), width=96, caption="As drawn")
    v = d.verdict
    said = f"{v.predicted} ({v.confidence:.0%} sure, {widgets.plain(v.model_key)})" if v else "not recorded"
    pick.caption(f"True label **{d.label}** · the model said {said} · drawn by {widgets.plain(drawer(d))}"
                 f" · from {widgets.plain(d.source[:60])}")
    allowed = state.may_edit_drawing(d)
    why = None if allowed else "Only the visitor who drew it, or the admin, can change this drawing."
    new = edit.selectbox("True label", range(10), index=d.label, key=f"drawings_relabel_{d.id}", disabled=not allowed)
    left, right = edit.columns(2)
    if left.button("Save label", key="drawings_relabel", disabled=not allowed or new == d.label, help=why,
                   icon=":material/check:"):
        sets.relabel(d.id, int(new))
        st.toast(f"Drawing #{d.id} is now labelled {new}.", icon=":material/check:")
        st.rerun()
    if right.button("Delete", key="drawings_delete", disabled=not allowed, help=why, icon=":material/delete:"):
        st.session_state["drawings_deleted"] = (d, sets.canvas_png(d.id))  # for Undo: one click, so one click back
        sets.delete_drawing(d.id)
        st.toast(f"Deleted drawing #{d.id}.", icon=":material/delete:")
        st.rerun()


def undo_delete(current: DrawingSet) -> None:
    """The last drawing deleted from this set, offered back (it returns with a new number, as it was otherwise)."""
    sets = state.drawing_store()
    deleted = st.session_state.get("drawings_deleted")
    if deleted is None or deleted[0].set_id != current.id:
        return
    d, png = deleted
    if st.button(f"Undo: put drawing #{d.id} (a {d.label}) back", key="drawings_undo_delete", icon=":material/undo:",
                 type="tertiary"):
        try:
            back = sets.add(d.set_id, d.model_input, png, label=d.label, drawer=d.drawer, drawer_name=d.drawer_name,
                            verdict=d.verdict, source=d.source, created=d.created)
        except DigitLabError as error:  # e.g. the set was deleted meanwhile
            widgets.error_box(error)
            return
        st.session_state.pop("drawings_deleted", None)
        st.toast(f"Drawing #{d.id} is back, as #{back.id}.", icon=":material/undo:")
        st.rerun()
